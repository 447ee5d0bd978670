"""Deployable artifacts from verified bytes: what every packaging target shares.

``python -m package`` resolves the model dvc.lock pins at a rev through the service's own
resolver (api.resolver: fetched if need be, md5-checked), writes it as a bundle (api.bundle)
and hands it to each target. A target is a module (or sub-package) here with a ``TARGET`` name
and ``build(job) -> Built``; adding one adds a module and edits no other. Each target builds
in a scratch folder under ``dist/`` and its result replaces ``dist/<target>/`` only when the
whole build succeeded, with a ``manifest.json`` naming rev, commit, md5, files and sizes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import pkgutil
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from api.resolver import Resolved

log = logging.getLogger("lockserve.package")

ROOT = Path(__file__).resolve().parent.parent
APP_PACKAGES = ("api", "contract")  # all a packaged service imports of this repo
# base root filesystems and installed sites (git-ignored); clones may share one
CACHE = Path(os.environ.get("LOCKSERVE_PACKAGE_CACHE") or ROOT / ".cache" / "lockserve")


class PackageError(Exception):
    """A target cannot be built: the message says why; nothing is left in dist/."""


@dataclass(frozen=True)
class Job:
    """What a target gets: the verified model, its bundle, a scratch folder and the options."""

    resolved: Resolved
    bundle: Path  # a folder written by api.bundle.write
    work: Path  # the target's scratch folder; what build() returns must be inside it
    onnx: bool  # the artifact carries an ONNX graph (else the sklearn backend serves it)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def requirements(self) -> Path:
        """The pinned serving dependencies: the ONNX path, or sklearn's when there is no graph."""
        name = "runtime.lock" if self.onnx else "runtime-sklearn.lock"
        return ROOT / "requirements" / name


@dataclass
class Built:
    """A target's result: its files and folders (inside the job's work folder) and figures for
    the manifest."""

    files: list[Path]
    facts: dict[str, Any] = field(default_factory=dict)


def targets() -> dict[str, ModuleType]:
    """Every packaging target here, by name: modules with ``TARGET``, ``build(job)`` and
    optionally ``OPTIONS`` (the ``--set`` keys they take) and ``IN_ALL = False`` (built only
    when named, not by ``--target all``)."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "TARGET"):
            found[module.TARGET] = module
    return dict(sorted(found.items()))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, for the manifest."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def copy_app(destination: Path) -> None:
    """The service's own code (api/, contract/) without caches, into ``destination``, and
    byte-compiled there."""
    from package.deps import compile_tree

    for name in APP_PACKAGES:
        shutil.copytree(
            ROOT / name,
            destination / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
        compile_tree(destination / name, name)


def stage(job: Job, app_root: Path, site_root: Path, leave_out: tuple[str, ...] = ()) -> None:
    """What every target carries, laid out for it: the serving dependencies in ``site_root``
    (without the top-level names starting with ``leave_out``), the code and the bundle in
    ``app_root``."""
    from package.deps import installed

    site = installed(job.requirements)
    shutil.copytree(
        site,
        site_root,
        symlinks=True,
        dirs_exist_ok=True,
        ignore=lambda folder, names: (
            [n for n in names if n.startswith(leave_out)] if Path(folder) == site else []
        ),
    )
    copy_app(app_root)
    shutil.copytree(job.bundle, app_root / "bundle")


def run(command: list[str], what: str, install_hint: str) -> str:
    """Run a tool; its output, or PackageError naming the tool's own first error line (a line
    ``E: `` as mmdebstrap writes, else its last)."""
    tool = shutil.which(command[0])
    if tool is None:
        raise PackageError(f"{command[0]} is not installed ({what} needs it): {install_hint}")
    done = subprocess.run([tool, *command[1:]], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        errors = [line for line in lines if line.startswith("E: ")]
        raise PackageError(f"{what} failed: {(errors or lines[-1:])[0]}")
    return done.stdout


def tree_bytes(path: Path) -> int:
    """Bytes of every regular file under ``path`` (what a platform counts as unpacked size)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def publish(name: str, job: Job, built: Built, out: Path, seconds: float) -> Path:
    """Move a finished target's files to ``out/<name>/`` with its manifest, replacing the last
    build whole: ``out/<name>/`` is the old one or the new one, never a mix or nothing."""
    final = out / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
    old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=out))
    try:
        staging.chmod(0o755)
        files: dict[str, Any] = {}
        for path in built.files:
            target = staging / path.name
            shutil.move(str(path), target)
            # a folder's files are listed by their path below out/<name>/
            items = (
                sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
            )
            for item in items:
                files[item.relative_to(staging).as_posix()] = {
                    "bytes": item.stat().st_size,
                    "sha256": sha256_file(item),
                }
        resolved = job.resolved
        manifest = {
            **built.facts,  # first: a target's figures never hide what was packaged
            "target": name,
            "artifact": resolved.name,
            "path": resolved.path,
            "md5": resolved.md5,
            "rev": resolved.rev,
            "commit": resolved.commit,
            "backend": "onnx" if job.onnx else "sklearn",
            "requirements": job.requirements.name,
            "files": files,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_s": round(seconds, 1),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            final.rename(old / name)
        try:
            staging.rename(final)
        except OSError:
            if (old / name).exists():
                (old / name).rename(final)  # put the last build back
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final
