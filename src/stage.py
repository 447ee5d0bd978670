"""What every stage shares: its params section, logging, timing and all-or-nothing writes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import resource
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from contract.schema import Schema

PARAMS_FILE = Path("params.yaml")

log = logging.getLogger("lockserve.pipeline")


class StageError(Exception):
    """Bad input or configuration: the stage stops, names the problem and writes nothing."""


def load_params(section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Return one stage's section of ``params.yaml``; a stage never reads another's."""
    try:
        with open(path, encoding="utf-8") as fh:  # YAML is UTF-8
            params = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:  # its message spans lines and quotes the text
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise StageError(f"{path}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise StageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(params, dict) or section not in params:
        raise StageError(f"{path}: no '{section}' section")
    if not isinstance(params[section], dict):
        raise StageError(
            f"{path}: '{section}' must map names to values, got {params[section]!r:.80}"
        )
    return params[section]


def read_schema(path: Path) -> Schema:
    """The input schema prepare wrote (contract.schema), checked."""
    try:
        return Schema.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise StageError(f"{path}: no such file (run the prepare stage)") from None
    except ValueError as exc:  # ContractError or bad JSON
        raise StageError(f"{path}: {exc}") from None


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
    the previous outputs exactly as they were. A failed write (a full disk) leaves no temp file
    behind, and its OSError names the output it was writing.
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path, data in outputs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((path, tmp))  # from here on removed if anything fails
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            except OSError as exc:
                if exc.filename is None:  # ENOSPC from write() names no file
                    exc.filename = str(path)
                raise
    except BaseException:
        for _, tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for path, tmp in staged:
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        log.info("wrote %s (%d bytes, md5 %s)", path, len(outputs[path]), md5_file(path))


def _atom_key(obj: Any) -> Any:
    """A key equal for two values only if they pickle to identical bytes (type and bits
    included: ``1`` and ``1.0``, ``0.0`` and ``-0.0`` differ); TypeError for anything else."""
    kind = type(obj)
    if kind in (str, bytes, int, bool) or obj is None:
        return (kind, obj)
    if kind is float:
        return (kind, struct.pack("<d", obj))
    if kind is tuple:
        return (kind, tuple(_atom_key(item) for item in obj))
    raise TypeError(kind)


class _CanonicalPickler(pickle._Pickler):  # the pure-Python pickler exposes save()
    """Pickler whose bytes depend only on the values pickled, not on object identity.

    The standard pickler memoises by ``id()``, so whether two equal strings or dtypes are one
    object (interning, a fresh fit versus an unpickled copy) changes the bytes; and numpy
    structured arrays (sklearn's tree nodes) carry uninitialised padding bytes. Values that
    would pickle to identical bytes (strings, bytes, tuples of such atoms, equal dtypes) are
    folded into one memo entry, and padding is zeroed. Folding is by type and bits, never by
    mere equality, so ``(1.0, 2.0)`` stays floats and ``-0.0`` keeps its sign.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self._canonical: dict[Any, Any] = {}

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:  # noqa: FBT001
        kind = type(obj)
        key: Any = None
        if kind in (str, bytes, tuple):
            with contextlib.suppress(TypeError):  # a tuple holding other objects: as it is
                key = _atom_key(obj)
        elif isinstance(obj, np.dtype) and obj.metadata is None:
            key = (np.dtype, repr(obj), obj.str, obj.isalignedstruct)
        if key is not None:
            obj = self._canonical.setdefault(key, obj)
        super().save(obj, save_persistent_id)

    def memoize(self, obj: Any) -> None:
        # The pure-Python pickler writes a buffer's bytes with save_bytes directly, bypassing
        # save()'s memo lookup; an empty buffer's b"" (a singleton) may be memoised already.
        if id(obj) not in self.memo:
            super().memoize(obj)

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
    """Log how long a stage took and the most memory it held (peak resident set size)."""
    started = time.perf_counter()
    yield
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("%s done in %.2f s, peak RSS %.0f MB", name, time.perf_counter() - started, peak_mb)


def main_wrapper(name: str, run: Any) -> None:
    """Entry point shared by the stage scripts: bad input exits 1 with one clear line.

    An unexpected exception also ends in one line, naming its type; LOCKSERVE_DEBUG=1 shows the
    traceback instead.
    """
    setup_logging()
    try:
        with timed(name):
            run()
    except StageError as exc:
        log.error("%s failed: %s", name, " ".join(str(exc).split()))
        raise SystemExit(1) from None
    except Exception as exc:
        if os.environ.get("LOCKSERVE_DEBUG"):
            raise
        log.error(
            "%s failed unexpectedly (%s: %s); LOCKSERVE_DEBUG=1 shows the traceback",
            name,
            type(exc).__name__,
            " ".join(str(exc).split())[:500],
        )
        raise SystemExit(1) from None
