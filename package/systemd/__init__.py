"""Target ``systemd``: a virtual machine install, a unit and its environment file.

Writes ``lockserve.service`` and ``lockserve.env`` for an install path (``prefix``, default
/opt/lockserve) and a tarball to unpack at / that holds the unit and everything it runs: the
service's code, the serving dependencies (package.deps), the bundle and the env file as
``lockserve.env.example`` (an upgrade never overwrites the host's settings), so the host needs
only CPython 3.11 (Debian 12's python3.11) and never fetches. The unit runs as a dedicated
dynamic user, notifies systemd once the model is verified, and is hardened.
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from pathlib import Path
from string import Template

from package import Built, Job, PackageError, stage

TARGET = "systemd"
OPTIONS = ("prefix", "python", "env_file")
HERE = Path(__file__).resolve().parent
DEFAULTS = {
    "prefix": "/opt/lockserve",
    "python": "/usr/bin/python3.11",
    "env_file": "/etc/lockserve/lockserve.env",
}

log = logging.getLogger("lockserve.package")


def options(job: Job) -> dict[str, str]:
    """prefix, python and env_file: the job's, else the defaults; each an absolute path."""
    chosen = {**DEFAULTS, **{k: v for k, v in job.options.items() if k in DEFAULTS}}
    for key, value in chosen.items():
        if not value.startswith("/") or value == "/" or any(c.isspace() for c in value):
            raise PackageError(f"{key} must be an absolute path without spaces, not {value!r}")
        chosen[key] = value.rstrip("/")
    return chosen


def render(job: Job) -> dict[str, str]:
    """The unit and the env file for the job's options, as text by file name."""
    resolved = job.resolved
    values = {
        **options(job),
        "md5": resolved.md5,
        "md5_short": resolved.md5,
        "name": resolved.name,
        "rev": resolved.rev,
        "commit": resolved.commit,
    }
    return {
        name: Template((HERE / name).read_text()).substitute(values)
        for name in ("lockserve.service", "lockserve.env")
    }


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def build(job: Job) -> Built:
    """The unit, the env file and the tarball; figures: the options used."""
    texts = render(job)
    chosen = options(job)
    prefix = chosen["prefix"].lstrip("/")
    tree = job.work / "tree"
    stage(job, tree, tree / "site")
    name = f"lockserve-{job.resolved.md5}-systemd.tar.gz"
    log.info("writing %s (unpack at /)", name)
    with tarfile.open(job.work / name, "w:gz", compresslevel=6) as archive:
        for path in [tree, *sorted(tree.rglob("*"))]:
            member = prefix if path == tree else f"{prefix}/{path.relative_to(tree).as_posix()}"
            info = archive.gettarinfo(str(path), member)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            # directories too, so what a restrictive umask unpacks stays readable to the user
            info.mode = 0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644
            if path.is_dir():
                archive.addfile(info)
                continue
            with open(path, "rb") as fh:
                archive.addfile(info, fh)
        unit = texts["lockserve.service"].encode()
        _add(archive, "etc/systemd/system/lockserve.service", unit, 0o644)
        # an example, not the env file itself: unpacking an upgrade keeps the host's settings
        _add(archive, f"{prefix}/lockserve.env.example", texts["lockserve.env"].encode(), 0o644)
    shutil.rmtree(tree)
    for file_name, text in texts.items():
        (job.work / file_name).write_text(text)
    return Built(
        [job.work / "lockserve.service", job.work / "lockserve.env", job.work / name],
        chosen,
    )
