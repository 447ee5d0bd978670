"""``python -m package``: build deployable artifacts of the model dvc.lock pins.

    python -m package [--target oci|lambda|systemd|mlflow|all] [--rev REV] [--out dist]
                      [--set prefix=/opt/lockserve ...]

The rev is LOCKSERVE_REV's (a branch, tag, commit or GTO name; default HEAD),
the artifact LOCKSERVE_ARTIFACT's, the remote LOCKSERVE_REMOTE's. The model is resolved and
verified by the service's resolver before any target is built; exit 1 with one line when it
cannot be, or when a target fails (what that target had built is removed, its last build in
dist/ stays as it was; earlier targets' artifacts stay, each complete). ``workspace`` is
refused: an artifact is labelled with the commit whose dvc.lock pins its model. ``all`` is
every target but those with ``IN_ALL = False`` (the MLflow export).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from api import artifact, bundle
from api.resolver import WORKSPACE, ResolutionError, resolve
from package import Job, PackageError, publish, targets, tree_bytes

log = logging.getLogger("lockserve.package")
RELATIVE = re.compile(r"^HEAD|[~^]")  # revs whose meaning moves with the repo


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"package: {message} (python -m package --help)\n")


def _options(pairs: list[str], chosen: list[ModuleType]) -> dict[str, str]:
    """``--set key=value`` pairs, each a key one of the chosen targets takes."""
    taken = {key for module in chosen for key in getattr(module, "OPTIONS", ())}
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PackageError(f"--set takes key=value, not {pair!r}")
        if key not in taken:
            they_take = ", ".join(sorted(taken)) or "nothing"
            raise PackageError(f"--set {key}: no chosen target takes it (they take: {they_take})")
        out[key] = value
    return out


def _size(path: Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    return tree_bytes(path) if path.is_dir() else path.stat().st_size


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so scratch folders are removed


def selected(known: dict[str, ModuleType], target: str) -> list[str]:
    """The targets ``--target`` names: one, or for ``all`` each that does not opt out."""
    if target != "all":
        return [target]
    return [name for name, module in known.items() if getattr(module, "IN_ALL", True)]


def main(argv: list[str] | None = None) -> int:
    """Resolve and verify the pinned model, then build each chosen target; 0, or 1 with one
    line naming the problem."""
    known = targets()
    parser = _Parser(prog="python -m package", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="all", choices=[*known, "all"])
    parser.add_argument("--rev", default=os.environ.get("LOCKSERVE_REV") or "HEAD")
    parser.add_argument("--repo", type=Path, default=Path(os.environ.get("LOCKSERVE_REPO", ".")))
    parser.add_argument("--out", type=Path, default=Path("dist"))
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a target's option"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("dvc").setLevel(logging.ERROR)  # the one line below says it all
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    chosen = selected(known, args.target)
    try:
        options = _options(args.set, [known[name] for name in chosen])
        if args.rev == WORKSPACE:
            raise PackageError(
                "rev 'workspace' names no commit; commit dvc.lock and package a rev "
                "(an artifact is labelled with the commit that pins its model)"
            )
        resolved = resolve(
            args.repo,
            args.rev,
            os.environ.get("LOCKSERVE_ARTIFACT") or None,
            os.environ.get("LOCKSERVE_REMOTE") or None,
        )
        loaded = artifact.load(resolved.data, resolved.md5)
        if RELATIVE.search(resolved.rev):  # HEAD~1 names another commit tomorrow
            resolved = dataclasses.replace(resolved, rev=resolved.commit)
    except (ResolutionError, PackageError, artifact.ArtifactError) as exc:
        log.error("package: %s", exc)
        return 1
    log.info(
        "packaging %s md5 %s pinned at %s (%s)",
        resolved.path,
        resolved.md5,
        resolved.rev,
        resolved.commit[:12],
    )
    for name in chosen:
        started = time.perf_counter()
        work = None
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=args.out))
            bundle.write(work / "bundle", resolved)
            job = Job(resolved, work / "bundle", work, loaded.onnx is not None, options)
            built = known[name].build(job)
            final = publish(name, job, built, args.out, time.perf_counter() - started)
        except (PackageError, OSError, subprocess.SubprocessError, shutil.Error) as exc:
            log.error("package %s: %s", name, exc)
            return 1
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        log.info(
            "%s: %s (%.0f s)",
            name,
            ", ".join(f"{p.name} {_size(p) / 1e6:.1f} MB" for p in sorted(final.iterdir())),
            time.perf_counter() - started,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
