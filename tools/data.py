"""`make data`: put the raw table params.yaml names in the work tree, md5-checked.

From the work tree if it is already there, else `dvc pull` from the default remote, else (the
shipped example only) from the ``palmerpenguins`` wheel, whose bytes are accepted only if they
hash to the md5 the committed .dvc file pins; then pushed, so the remote holds it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import sys
from pathlib import Path

import yaml

log = logging.getLogger("lockserve.data")

PARAMS = Path("params.yaml")
EXAMPLE = ("palmerpenguins", "data/penguins.csv")


class DataError(Exception):
    """The raw table cannot be had; the message says what was tried."""


def md5_of(path: Path) -> str | None:
    """Hex md5 of a file, read in blocks; None when there is no such file."""
    digest = hashlib.md5()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def raw_path(params: Path = PARAMS) -> Path:
    """The raw table the prepare stage reads."""
    doc = yaml.safe_load(params.read_text()) or {}
    path = (doc.get("prepare") or {}).get("data")
    if not path:
        raise DataError(f"{params}: prepare.data names no raw table")
    return Path(path)


def pinned_md5(dvc_file: Path) -> str:
    """The md5 a .dvc file pins for its single out."""
    try:
        doc = yaml.safe_load(dvc_file.read_text())
        return str(doc["outs"][0]["md5"])
    except FileNotFoundError:
        raise DataError(
            f"{dvc_file} does not exist: track the table with `make init DATA=... TARGET=...`"
        ) from None
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        raise DataError(f"{dvc_file} pins no md5") from None


def packaged_example() -> bytes:
    return importlib.resources.files(EXAMPLE[0]).joinpath(EXAMPLE[1]).read_bytes()


def ensure(table: Path) -> str:
    """Make ``table`` present with its pinned bytes; return how."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    dvc_file = table.with_name(table.name + ".dvc")
    expected = pinned_md5(dvc_file)
    if md5_of(table) == expected:
        return "already in the work tree"
    with Repo(".") as repo:
        try:
            repo.pull(targets=[str(dvc_file)])
        except DvcException as exc:
            log.info("dvc pull %s: %s", dvc_file, " ".join(str(exc).split()))
        if md5_of(table) == expected:
            return "pulled from the default remote"
        data = packaged_example()
        if hashlib.md5(data).hexdigest() != expected:
            raise DataError(
                f"{table} (md5 {expected}) is neither in the work tree nor on the default "
                "remote: `dvc push` it from the machine that has it"
            )
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_bytes(data)
        repo.commit(str(dvc_file), force=True)
        repo.push(targets=[str(dvc_file)])
    return f"bootstrapped from {EXAMPLE[0]}, md5 verified, pushed"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("dvc", "dvc_data", "dvc_objects"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        table = Path(sys.argv[1]) if len(sys.argv) > 1 else raw_path()
        log.info("%s: %s", table, ensure(table))
    except DataError as exc:
        log.error("make data: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
