"""Target ``oci``: an OCI image built without a daemon, exported as an OCI archive.

The base is a root filesystem mmdebstrap makes from Debian packages (essential + python3, a
``lockserve`` system user, no docs), cached under .cache/lockserve/ and imported once into
buildah's storage. The Containerfile beside this module adds the serving dependencies
(package.deps), the code and the bundle, with no RUN step; buildah builds it with vfs storage
and chroot isolation (what works as root with no daemon) and pushes it to
``lockserve-<md5>.oci.tar``. Labels name the commit and the model's md5, and the entrypoint
refuses (exit 3) a bundle whose md5 is not the label's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from package import CACHE, Built, Job, PackageError, deps, run, stage

TARGET = "oci"
HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
USER_ID = 10001
BASE_COMMAND = [
    "mmdebstrap",
    "--quiet",
    "--format=tar",
    "--variant=essential",  # no apt: the image is never upgraded in place
    "--include=python3,libstdc++6",  # libstdc++: numpy, onnxruntime, grpcio
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    # the service's user, written directly (essential has no passwd package, which brings PAM)
    f"--customize-hook=echo 'lockserve:x:{USER_ID}:{USER_ID}:lockserve:/nonexistent:"
    f'/usr/sbin/nologin\' >> "$1/etc/passwd"',
    f"--customize-hook=echo 'lockserve:x:{USER_ID}:' >> \"$1/etc/group\"",
    SUITE,
]
# What works as root on a machine with no Docker daemon (and no user namespaces to spare)
STORAGE = ["--storage-driver", "vfs"]

log = logging.getLogger("lockserve.package")


def _run(command: list[str], what: str) -> str:
    return run(command, what, "`make package-tools` installs buildah, podman, skopeo, mmdebstrap")


def base_key() -> str:
    """The base's cache key: the mmdebstrap command and the ISO week, so the base is made anew
    each week and picks up Debian's security updates."""
    recipe = " ".join(BASE_COMMAND) + time.strftime(" %G-W%V")
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def base_image() -> str:
    """The base image in buildah's storage: made from the cached root filesystem, which is made
    by mmdebstrap when absent."""
    key = base_key()
    name = f"localhost/lockserve-base:{key}"
    if _run(["buildah", *STORAGE, "images", "--quiet", "--filter", f"reference={name}"], "buildah"):
        return name
    rootfs = CACHE / f"base-{SUITE}-{key}.tar"
    if not rootfs.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        log.info("making the base root filesystem with mmdebstrap (%s, essential + python3)", SUITE)
        partial = CACHE / f".{rootfs.name}.{os.getpid()}.partial"
        try:
            _run([*BASE_COMMAND, str(partial)], "mmdebstrap")
            partial.rename(rootfs)
        finally:
            partial.unlink(missing_ok=True)
        for older in CACHE.glob(f"base-{SUITE}-*.tar"):  # last week's
            if older != rootfs:
                older.unlink(missing_ok=True)
    log.info("importing %s into buildah's storage as %s", rootfs.name, name)
    container = _run(["buildah", *STORAGE, "from", "scratch"], "buildah from").strip()
    try:
        _run(["buildah", *STORAGE, "add", container, str(rootfs), "/"], "buildah add")
        _run(["buildah", *STORAGE, "commit", "--quiet", container, name], "buildah commit")
    finally:
        subprocess.run(["buildah", *STORAGE, "rm", container], capture_output=True, check=False)
    listed = _run(["buildah", *STORAGE, "images", "--format", "{{.Name}}:{{.Tag}}"], "buildah")
    for older in set(listed.split()):  # last week's bases, unless an image still uses one
        if older.startswith("localhost/lockserve-base:") and older != name:
            subprocess.run(["buildah", *STORAGE, "rmi", older], capture_output=True, check=False)
    return name


def image_size(name: str) -> int:
    """Unpacked size of an image in the containers storage, in bytes."""
    size = _run(["podman", *STORAGE, "image", "inspect", "--format", "{{.Size}}", name], "podman")
    return int(size.strip())


def _image_id(name: str) -> str:
    return _run(["buildah", *STORAGE, "images", "--quiet", "--no-trunc", name], "buildah").strip()


def build(job: Job) -> Built:
    """The image in buildah's storage and its OCI archive; figures: tag, base, size, labels."""
    resolved = job.resolved
    deps.check_builder()  # before mmdebstrap makes a base of this machine's arch
    base = base_image()
    context = job.work / "context"
    home = context / "root" / "opt" / "lockserve"
    stage(job, home, context / "site")
    shutil.copy2(HERE / "entrypoint", home / "entrypoint")
    tag = f"localhost/lockserve:{resolved.md5}"
    try:
        previous = _image_id(tag)
    except PackageError:
        previous = ""
    arguments = {
        "BASE": base,
        "MD5": resolved.md5,
        "REV": resolved.rev,
        "COMMIT": resolved.commit,
        "NAME": resolved.name,
        "CREATED": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log.info("building %s with buildah (vfs storage, chroot isolation)", tag)
    started = time.perf_counter()
    _run(
        [
            "buildah",
            *STORAGE,
            "bud",
            "--quiet",
            "--layers",  # the dependencies' layer is reused by the next model's image
            "--isolation",
            "chroot",
            "--format",
            "oci",
            "--pull-never",
            *[f"--build-arg={key}={value}" for key, value in arguments.items()],
            "--file",
            str(HERE / "Containerfile"),
            "--tag",
            tag,
            str(context),
        ],
        "buildah bud",
    )
    bud_s = time.perf_counter() - started
    shutil.rmtree(context)
    archive = job.work / f"lockserve-{resolved.md5}.oci.tar"
    with tempfile.TemporaryDirectory(dir=job.work) as scratch:
        log.info("exporting %s", archive.name)
        partial = Path(scratch) / archive.name
        _run(
            ["buildah", *STORAGE, "push", "--quiet", tag, f"oci-archive:{partial}:{tag}"],
            "buildah push",
        )
        partial.rename(archive)
    if previous and previous != _image_id(tag):  # the last build of this tag: superseded
        subprocess.run(["buildah", *STORAGE, "rmi", previous], capture_output=True, check=False)
    return Built(
        [archive],
        {
            "image": tag,
            "base": base,
            "image_bytes": image_size(tag),
            "buildah_bud_s": round(bud_s, 1),
            "labels": {
                "org.opencontainers.image.revision": resolved.commit,
                "dev.lockserve.model.md5": resolved.md5,
            },
        },
    )
