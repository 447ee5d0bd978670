"""Target ``lambda``: an AWS Lambda zip (handler ``api.lambda_handler.handler``).

The zip holds the serving dependencies (package.deps) but the runtime interface client, which
Lambda's runtime brings, the service's code and the bundle; the handler verifies the bundle's
md5 at cold start. Lambda refuses a function over 250 MiB unpacked, so the build does too,
before writing anything. The manifest names the newest glibc the wheels need, and the build
says when that rules out Lambda's managed python3.11 runtime (Amazon Linux 2, glibc 2.26). The
zip is deterministic: entries sorted, fixed timestamps and modes.
"""

from __future__ import annotations

import logging
import shutil
import stat
import zipfile
from pathlib import Path

from package import Built, Job, PackageError, deps, stage, tree_bytes

TARGET = "lambda"
HANDLER = "api.lambda_handler.handler"
LIMIT_BYTES = 262_144_000  # Lambda's quota, unzipped, layers included ("250 MB": MiB)
EPOCH = (1980, 1, 1, 0, 0, 0)
MANAGED_RUNTIME_GLIBC = (2, 26)  # python3.11 runs on Amazon Linux 2
# the runtime interface client and what it needs: Lambda's runtime has its own
RUNTIME_OWN = ("awslambdaric", "simplejson", "snapshot_restore_py", "runtime_client")

log = logging.getLogger("lockserve.package")


def _zip(tree: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_dir():
                continue
            entry = zipfile.ZipInfo(path.relative_to(tree).as_posix(), EPOCH)
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            entry.external_attr = (stat.S_IFREG | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                archive.writestr(entry, fh.read(), compresslevel=6)


def build(job: Job) -> Built:
    """The zip, refused over Lambda's size limit; figures: handler, runtime, sizes, glibc."""
    tree = job.work / "tree"
    stage(job, tree, tree, leave_out=RUNTIME_OWN)
    unpacked = tree_bytes(tree)
    if unpacked > LIMIT_BYTES:
        raise PackageError(
            f"the Lambda package would be {unpacked / 2**20:.0f} MiB unzipped, over Lambda's "
            f"{LIMIT_BYTES / 2**20:.0f} MiB: deploy the OCI image as a Lambda container image"
        )
    floor = deps.glibc_floor(tree)
    managed = floor <= MANAGED_RUNTIME_GLIBC
    if not managed:
        log.warning(
            "the wheels need glibc %d.%d; Lambda's managed python%s runtime (Amazon Linux 2) has "
            "2.26 and cannot load them: run this zip on a python%s image with glibc %d.%d or "
            "newer, or deploy the OCI image as a Lambda container image",
            *floor,
            deps.PYTHON,
            deps.PYTHON,
            *floor,
        )
    name = f"lockserve-{job.resolved.md5}-lambda.zip"
    log.info("zipping %d MB for Lambda", unpacked // 1_000_000)
    _zip(tree, job.work / name)
    shutil.rmtree(tree)
    return Built(
        [job.work / name],
        {
            "handler": HANDLER,
            "runtime": f"python{deps.PYTHON}",
            "architecture": deps.MACHINE,
            "min_glibc": f"{floor[0]}.{floor[1]}",
            "loads_on_managed_runtime": managed,
            "unzipped_bytes": unpacked,
            "limit_bytes": LIMIT_BYTES,
        },
    )
