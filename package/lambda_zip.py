"""Target ``lambda``: an AWS Lambda zip (handler ``api.lambda_handler.handler``).

The zip holds the serving dependencies (package.site), the service's code and the bundle; the
handler verifies the bundle's md5 at cold start. Lambda refuses a function over 250 MB
unpacked, so the build does too, before writing anything. The zip is deterministic: entries
sorted, fixed timestamps and modes.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

from package import Built, Job, PackageError, copy_app, site, tree_bytes

TARGET = "lambda"
HANDLER = "api.lambda_handler.handler"
LIMIT_BYTES = 250 * 1000 * 1000  # Lambda's quota, unzipped, layers included (decimal MB)
EPOCH = (1980, 1, 1, 0, 0, 0)

log = logging.getLogger("lockserve.package")


def _zip(tree: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_dir():
                continue
            entry = zipfile.ZipInfo(path.relative_to(tree).as_posix(), EPOCH)
            entry.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                archive.writestr(entry, fh.read(), compresslevel=6)


def build(job: Job) -> Built:
    tree = job.work / "tree"
    shutil.copytree(site.site(job.requirements), tree, symlinks=True)
    copy_app(tree)
    site.compile_tree(tree / "api")
    site.compile_tree(tree / "contract")
    shutil.copytree(job.bundle, tree / "bundle")
    unpacked = tree_bytes(tree)
    if unpacked > LIMIT_BYTES:
        raise PackageError(
            f"the Lambda package would be {unpacked / 1e6:.0f} MB unzipped, over Lambda's "
            f"{LIMIT_BYTES / 1e6:.0f} MB: deploy the OCI image as a Lambda container image"
        )
    name = f"lockserve-{job.resolved.md5[:12]}-lambda.zip"
    log.info("zipping %d MB for Lambda", unpacked // 1_000_000)
    _zip(tree, job.work / name)
    shutil.rmtree(tree)
    return Built(
        [job.work / name],
        {
            "handler": HANDLER,
            "runtime": f"python{site.PYTHON}",
            "architecture": "x86_64",
            "min_glibc": site.GLIBC_FLOOR,
            "unzipped_bytes": unpacked,
            "limit_bytes": LIMIT_BYTES,
        },
    )
