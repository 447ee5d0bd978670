"""What every stage shares: its params section, logging, timing and all-or-nothing writes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

PARAMS_FILE = Path("params.yaml")

log = logging.getLogger("lockserve.pipeline")


class StageError(Exception):
    """Bad input or configuration: the stage stops, names the problem and writes nothing."""


def load_params(section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one stage's section of ``params.yaml``; a stage never reads another's."""
    with open(path) as fh:
        params = yaml.safe_load(fh) or {}
    if section not in params:
        raise StageError(f"{path}: no '{section}' section")
    return params[section]


def md5_file(path: Path) -> str:
    """Hex md5 of a file, the hash DVC records in dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a frame to parquet bytes (same frame, same bytes)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def write_outputs(outputs: Mapping[Path, bytes]) -> None:
    """Write every output or none: all go to temp files first, then are renamed into place.

    Stages compute everything before calling this, so a failure anywhere earlier leaves
    the previous outputs exactly as they were.
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path, data in outputs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            staged.append((path, tmp))
    except BaseException:
        for _, tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for path, tmp in staged:
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        log.info("wrote %s (%d bytes, md5 %s)", path, len(outputs[path]), md5_file(path))


class _CanonicalPickler(pickle._Pickler):  # the pure-Python pickler exposes save()
    """Pickler whose bytes depend only on the values pickled, not on object identity.

    The standard pickler memoises by ``id()``, so whether two equal strings or dtypes are one
    object (interning, a fresh fit versus an unpickled copy) changes the bytes; and numpy
    structured arrays (sklearn's tree nodes) carry uninitialised padding bytes. Equal
    immutable atoms are folded into one memo entry and padding is zeroed.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self._canonical: dict[tuple[type, Any], Any] = {}

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:  # noqa: FBT001
        kind = type(obj)
        if kind in (str, bytes, tuple) or isinstance(obj, np.dtype):
            with contextlib.suppress(TypeError):  # unhashable tuple: pickle it as it is
                obj = self._canonical.setdefault((kind, obj), obj)
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray and obj.dtype.fields is not None:
            clean = np.zeros(obj.shape, obj.dtype)
            for name in obj.dtype.names:
                clean[name] = obj[name]
            return clean.__reduce_ex__(5)
        return NotImplemented


def canonical_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` so that the same fitted object always gives the same bytes."""
    buf = io.BytesIO()
    _CanonicalPickler(buf).dump(obj)
    return buf.getvalue()


def setup_logging() -> None:
    """Stage logs: one line per event on stderr, with the stage name."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def timed(name: str) -> Iterator[None]:
    """Log how long a stage took."""
    started = time.perf_counter()
    yield
    log.info("%s done in %.2f s", name, time.perf_counter() - started)


def main_wrapper(name: str, run: Any) -> None:
    """Entry point shared by the stage scripts: bad input exits 1 with one clear line."""
    setup_logging()
    try:
        with timed(name):
            run()
    except StageError as exc:
        log.error("%s failed: %s", name, exc)
        raise SystemExit(1) from None
