"""Put the raw table in place on a machine whose DVC remote does not hold it yet.

The Palmer penguins table ships inside the ``palmerpenguins`` wheel. This copies it to
data/raw/penguins.csv only if its md5 equals the one the committed .dvc file pins, so a
package that ships different bytes can never silently change the data.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import sys
from pathlib import Path

import yaml

from src.stage import StageError, main_wrapper, write_outputs

log = logging.getLogger("lockserve.pipeline")

DVC_FILE = Path("data/raw/penguins.csv.dvc")


def pinned_md5(dvc_file: Path) -> str:
    """The md5 the .dvc file pins for its single out."""
    doc = yaml.safe_load(dvc_file.read_text())
    return str(doc["outs"][0]["md5"])


def packaged_table() -> bytes:
    return importlib.resources.files("palmerpenguins").joinpath("data/penguins.csv").read_bytes()


def run(dvc_file: Path = DVC_FILE) -> None:
    """Copy the packaged table next to ``dvc_file`` after checking it against the pin."""
    target = dvc_file.with_suffix("")
    expected = pinned_md5(dvc_file)
    data = packaged_table()
    found = hashlib.md5(data).hexdigest()
    if found != expected:
        raise StageError(
            f"palmerpenguins ships penguins.csv with md5 {found}; {dvc_file} pins {expected}"
        )
    write_outputs({target: data})


if __name__ == "__main__":
    main_wrapper("bootstrap", lambda: run(Path(sys.argv[1]) if len(sys.argv) > 1 else DVC_FILE))
