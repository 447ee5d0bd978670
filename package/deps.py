"""The serving dependencies as a folder to put on a packaged Python's path.

The pinned lock (requirements/runtime.lock, or runtime-sklearn.lock) is installed with uv into
a plain folder for CPython 3.11 on x86_64 Linux (manylinux wheels), without console scripts
or the packages' own test suites, and byte-compiled with unchecked-hash .pyc files: valid on
any clock and any read-only root, never re-validated against their .py (which an artifact
never changes). The folder is cached under .cache/lockserve/ by the lock's content and this
module's own source (a change of recipe builds anew); builds that share the cache may race,
and the first to finish is kept.
"""

from __future__ import annotations

import compileall
import hashlib
import logging
import platform
import py_compile
import re
import shutil
import sys
import tempfile
from pathlib import Path

from package import CACHE, PackageError, run

log = logging.getLogger("lockserve.package")

PYTHON = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
MACHINE = "x86_64"
DROP = ("bin",)  # console scripts point at this machine's interpreter: useless elsewhere
MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_|manylinux(2014|2010|1)_")
LEGACY = {"2014": (2, 17), "2010": (2, 12), "1": (2, 5)}


def check_builder() -> None:
    """The artifacts run CPython 3.11 on x86_64: refuse to build them anywhere else (the .pyc
    files come from this interpreter, the base root filesystem from this machine's arch)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != PYTHON or platform.machine() != MACHINE:
        raise PackageError(
            f"artifacts are built by CPython {PYTHON} on {MACHINE}; this is CPython {here} on "
            f"{platform.machine()}"
        )


def compile_tree(path: Path, name: str) -> None:
    """Byte-compile ``path`` with unchecked-hash .pyc files (valid on any clock, any root),
    naming the sources ``name/...`` in them rather than this build's scratch path, so the same
    sources always give the same bytes (Python puts the real path in at import)."""
    ok = compileall.compile_dir(
        str(path),
        ddir=name,
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not ok:
        raise PackageError(f"{path}: some files do not compile")


def glibc_floor(folder: Path) -> tuple[int, int]:
    """The newest glibc any installed wheel needs, from the wheels' own platform tags."""
    floor = (2, 5)
    for wheel in folder.glob("*.dist-info/WHEEL"):
        needs: list[tuple[int, int]] = []
        for line in wheel.read_text().splitlines():
            if line.startswith("Tag:") and (match := MANYLINUX.search(line)):
                major, minor, legacy = match.groups()
                needs.append(LEGACY[legacy] if legacy else (int(major), int(minor)))
        if needs:  # a wheel with several tags runs where its oldest one does
            floor = max(floor, min(needs))
    return floor


def install(requirements: Path, target: Path, wheels_only: bool = True) -> None:
    """uv installs ``requirements`` into the plain folder ``target`` for the packaged platform
    (CPython 3.11, x86_64 manylinux), nothing compiled; ``wheels_only`` refuses sdists."""
    uv = Path(sys.executable).with_name("uv")
    command = [str(uv) if uv.exists() else "uv", "pip", "install", "--quiet", "--no-deps"]
    command += ["--only-binary", ":all:"] if wheels_only else []
    command += ["--python-version", PYTHON, "--python-platform", PLATFORM, "--no-compile"]
    command += ["--target", str(target), "-r", str(requirements)]
    run(command, f"installing {requirements.name}", "`make setup` puts uv in .venv")


def installed(requirements: Path) -> Path:
    """The installed, compiled folder for ``requirements`` (built once, then cached)."""
    check_builder()
    recipe = f"{PYTHON} {PLATFORM}\n".encode() + Path(__file__).read_bytes()
    key = hashlib.sha256(recipe + requirements.read_bytes()).hexdigest()[:16]
    folder = CACHE / f"site-{requirements.stem}-{key}"
    if folder.is_dir():
        log.info("serving dependencies from cache: %s", folder.name)
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".site-", dir=CACHE))
    log.info("installing %s for CPython %s on %s", requirements.name, PYTHON, PLATFORM)
    try:
        install(requirements, scratch)
        for name in DROP:
            shutil.rmtree(scratch / name, ignore_errors=True)
        for tests in sorted(scratch.glob("*/**/tests"), reverse=True):  # packages' own tests
            shutil.rmtree(tests, ignore_errors=True)
        compile_tree(scratch, "site")
        try:
            scratch.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
            log.info("another build cached %s first; using it", folder.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder
