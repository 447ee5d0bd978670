"""Fetching one pinned object from a DVC remote, with a preflight and bounded retries.

DVC's fetch reports failures only as a count, so the remote is first probed through DVC's own
filesystem for it: a refused login (403) fails at once, an unreachable server is retried with
exponential backoff, and each failure becomes one line naming the remote. What DVC logs for an
object it could not transfer (a dropped connection, a full disk), traceback and all, becomes
the cause on that line instead.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from api.logs import FIELDS

log = logging.getLogger("lockserve.remote")


class RemoteError(Exception):
    """The remote could not be reached or refused us; the message names it."""


class RepoLocked(RemoteError):
    """Another DVC process held the repo's lock, so the fetch never started."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # DVC colours some messages (its lock error's link)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` without terminal colours, on one line, at most ``limit`` characters."""
    flat = " ".join(ANSI.sub("", text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def cause(exc: BaseException) -> str:
    """An exception and the one it arose from, if another (a retry that failed after a
    connection was lost), on one line."""
    parts: list[str] = []
    link: BaseException | None = exc
    while link is not None and len(parts) < 2:
        text = one_line(str(link)) or type(link).__name__
        if text not in parts:
            parts.append(text)
        link = link.__cause__ or link.__context__
    return ", after: ".join(parts)


class TransferFailures(logging.Filter):
    """On DVC's transfer logger during a fetch: keeps the cause of each object it could not
    transfer and drops the record (an ERROR line with a traceback, then only a count)."""

    LOGGER = "dvc_data.hashfile.transfer"

    def __init__(self) -> None:
        super().__init__()
        self.causes: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        self.causes.append(cause(exc))
        return False


def describe(repo: object, name: str) -> str:
    url = repo.config["remote"].get(name, {}).get("url", "?")  # type: ignore[attr-defined]
    return f"remote {name!r} ({url})"


def _probe(fs: object, path: str, label: str, attempts: int, backoff_s: float) -> None:
    """Check the remote answers; retry what may pass (connection, 5xx), not what will not."""
    for attempt in range(1, attempts + 1):
        try:
            fs.exists(path)  # type: ignore[attr-defined]
            return
        except PermissionError as exc:
            raise RemoteError(
                f"{label} answered 403 Forbidden ({exc}): check its credentials "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or .dvc/config.local)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - boto, aiohttp and OS errors all mean "try again"
            if attempt == attempts:
                raise RemoteError(f"{label} unreachable after {attempts} attempts: {exc}") from None
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.1f s",
                label,
                attempt,
                attempts,
                exc,
                delay,
                extra={FIELDS: {"attempt": attempt, "retry_in_s": delay}},
            )
            time.sleep(delay)


def fetch(
    repo_root: Path,
    commit: str | None,
    path: str,
    remote: str | None,
    attempts: int,
    backoff_s: float,
) -> str:
    """`dvc fetch` exactly ``path`` as pinned at ``commit`` (None: the work tree's dvc.lock)
    into the cache; return the remote."""
    from dvc.exceptions import DvcException
    from dvc.lock import LockError
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        name = remote or repo.config["core"].get("remote")
        if not name:
            raise RemoteError("no DVC remote is configured (set a default or LOCKSERVE_REMOTE)")
        label = describe(repo, name)
        try:
            store = repo.cloud.get_remote(name)
        except DvcException as exc:
            raise RemoteError(f"{label}: {one_line(str(exc))}") from None
        _probe(store.fs, store.path, label, attempts, backoff_s)
        failures = TransferFailures()
        transfer_log = logging.getLogger(TransferFailures.LOGGER)
        transfer_log.addFilter(failures)
        try:
            if commit is None:  # the work tree: a target is a path from the current directory
                repo.fetch(targets=[str(Path(repo.root_dir) / path)], remote=name)
            else:
                repo.fetch(targets=[path], revs=[commit], workspace=False, remote=name)
        except LockError as exc:
            raise RepoLocked(f"{label}: fetch failed: {one_line(str(exc))}") from None
        except DvcException as exc:
            why = f": {failures.causes[0]}" if failures.causes else ""
            raise RemoteError(f"{label}: fetch failed: {one_line(str(exc))}{why}") from None
        finally:
            transfer_log.removeFilter(failures)
    return label
