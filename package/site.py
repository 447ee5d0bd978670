"""The serving dependencies as a folder to put on a packaged Python's path.

The pinned lock (requirements/runtime.lock, or runtime-sklearn.lock) is installed with uv into
a plain folder for CPython 3.11 on x86_64 Linux (manylinux_2_28 wheels, the floor onnxruntime
sets), byte-compiled with hash-checked .pyc files (no timestamps, so a read-only root still
starts fast). The folder is cached by the lock's content under .cache/lockserve/.
"""

from __future__ import annotations

import compileall
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from package import CACHE, PackageError

log = logging.getLogger("lockserve.package")

PYTHON = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
GLIBC_FLOOR = "2.28"
DROP = ("bin",)  # console scripts point at this machine's interpreter: useless elsewhere


def compile_tree(path: Path) -> None:
    """Byte-compile ``path`` with unchecked-hash .pyc files (valid on any clock, any root)."""
    import py_compile

    ok = compileall.compile_dir(
        str(path),
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise PackageError(f"{path}: some files do not compile")


def site(requirements: Path) -> Path:
    """The installed, compiled folder for ``requirements`` (built once, then cached)."""
    key = hashlib.sha256(f"{PYTHON} {PLATFORM}\n".encode() + requirements.read_bytes())
    folder = CACHE / f"site-{requirements.stem}-{key.hexdigest()[:16]}"
    if folder.is_dir():
        log.info("serving dependencies from cache: %s", folder.name)
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".site-", dir=CACHE))
    uv = Path(sys.executable).with_name("uv")
    command = [
        str(uv if uv.exists() else shutil.which("uv") or "uv"),
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--python-version",
        PYTHON,
        "--python-platform",
        PLATFORM,
        "--target",
        str(scratch),
        "-r",
        str(requirements),
    ]
    log.info("installing %s for CPython %s on %s", requirements.name, PYTHON, PLATFORM)
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PackageError(f"installing {requirements.name} failed: {last}")
        for name in DROP:
            shutil.rmtree(scratch / name, ignore_errors=True)
        for tests in sorted(scratch.glob("*/**/tests"), reverse=True):  # packages' own tests
            shutil.rmtree(tests, ignore_errors=True)
        compile_tree(scratch)
        scratch.rename(folder)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return folder
