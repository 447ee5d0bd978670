"""Model resolution: git rev -> dvc.lock -> md5 -> verified bytes of exactly that object.

Looks in the work tree, then the DVC cache, then fetches that one object from the remote
(DVC's own API for each step). Every candidate's md5 is checked against the lock; bytes that
do not match are never returned. Anything wrong raises ResolutionError with one clear line.
Starts that share a repo fetch one at a time, and a failed fetch leaves nothing in the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import remote as remotes
from api.logs import FIELDS

log = logging.getLogger("lockserve.resolver")


class ResolutionError(Exception):
    """The pinned model cannot be had: the message says what was expected and what was found."""


@dataclass(frozen=True)
class Resolved:
    """Verified bytes of one pinned artifact and where they came from."""

    name: str
    path: str
    md5: str
    rev: str
    commit: str
    source: str  # workspace | cache | remote
    data: bytes
    metrics: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


# GTO's names for a registered version or an assigned stage: name@v1.2.0, name#prod
GTO_REV = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9-]*)(?:@(?P<version>v[^#@\s]+)|#(?P<stage>[\w-]+))$"
)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _timed_md5(data: bytes, timings: dict[str, float]) -> str:
    """``md5_hex(data)``, its time recorded as the resolution's ``verify_ms``."""
    started = time.perf_counter()
    got = md5_hex(data)
    timings["verify_ms"] = (time.perf_counter() - started) * 1000
    return got


WORKSPACE = "workspace"


def git_rev(repo_root: Path, rev: str) -> str | None:
    """``rev`` as git understands it: GTO versions and stages become the commit they name;
    ``workspace`` (DVC's name for the work tree) is None: the dvc.lock on disk, as `dvc repro`
    last wrote it, committed or not."""
    if rev == WORKSPACE:
        return None
    match = GTO_REV.match(rev)
    if not match:
        return rev
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo_root)) as repo:
            return repo.artifacts.get_rev(
                match["name"], version=match["version"], stage=match["stage"]
            )
    except DvcException as exc:
        raise ResolutionError(f"cannot resolve {rev!r} with GTO: {exc}") from None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


LOCKED_WAIT_S = 10.0  # how long a start waits for another one's hold on DVC's index


def _info(fs: Any, path: str) -> dict[str, Any]:
    """``fs.info(path)``, waiting while another process holds DVC's index database: starts
    that share a repo read it at the same moment (sqlite says "database is locked")."""
    delay, waited = 0.05, 0.0
    while True:
        try:
            return fs.info(path)
        except Exception as exc:  # sqlite3's, or a DVC error that wraps it
            if "database is locked" not in str(exc) or waited >= LOCKED_WAIT_S:
                raise
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, 1.0)


def _pinned(fs: Any, name: str | None, rev: str, commit: str) -> tuple[str, str, str]:
    """Name, path and md5 of artifact ``name`` (by default the one artifact of type model) as
    dvc.yaml declares and dvc.lock pins it at ``rev``."""
    try:
        declared = {n: a for arts in fs.repo.artifacts.read().values() for n, a in arts.items()}
    except Exception as exc:  # noqa: BLE001 - DVC raises many YAML/schema errors
        raise ResolutionError(
            f"cannot read dvc.yaml/dvc.lock at {rev} ({commit[:12]}): {exc}"
        ) from None
    if name is None:
        models = sorted(n for n, a in declared.items() if a.type == "model")
        if len(models) != 1:
            raise ResolutionError(
                f"dvc.yaml at {rev} ({commit[:12]}) declares {len(models)} artifacts of type "
                f"model ({', '.join(models) or 'none'}): set LOCKSERVE_ARTIFACT to one"
            )
        name = models[0]
    if name not in declared:
        raise ResolutionError(
            f"dvc.yaml at {rev} ({commit[:12]}) declares no artifact {name!r} "
            f"(found: {', '.join(sorted(declared)) or 'none'})"
        )
    path = declared[name].path
    try:
        info = _info(fs, path)
        md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    except FileNotFoundError:
        md5 = None
    except Exception as exc:  # noqa: BLE001
        raise ResolutionError(f"dvc.lock at {rev} ({commit[:12]}) is unreadable: {exc}") from None
    if not md5:
        raise ResolutionError(f"dvc.lock at {rev} ({commit[:12]}) pins no md5 for {path}")
    return name, path, md5


def resolve(
    repo_root: Path,
    rev: str,
    name: str | None,
    remote: str | None = None,
    attempts: int = 3,
    backoff_s: float = 0.5,
) -> Resolved:
    """Return the verified bytes of artifact ``name`` pinned by ``dvc.lock`` at ``rev``
    (``name`` None: the one artifact of type model that dvc.yaml declares).

    ``rev`` is a branch, tag or commit, or a GTO version (``name@v1.0.0``) or stage
    (``name#prod``). A remote that cannot be reached is tried ``attempts`` times.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fs, commit = _open(repo_root, rev)
    try:
        return _resolve_in(
            fs, repo_root, rev, name, commit, remote, attempts, backoff_s, timings, started
        )
    finally:
        fs.close()  # its git packs and DVC index: not left to the garbage collector


def _open(repo_root: Path, rev: str) -> tuple[Any, str]:
    """DVC's filesystem of the repo at ``rev``, and the commit it is (one line if neither)."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.scm import RevError

    try:
        fs = DVCFileSystem(str(repo_root), rev=git_rev(repo_root, rev))
        return fs, fs.repo.get_rev()
    except NotDvcRepoError:
        raise ResolutionError(f"{repo_root}: not a DVC repository") from None
    except RevError:
        raise ResolutionError(f"unknown git revision {rev!r} in {repo_root}") from None
    except DvcException as exc:
        raise ResolutionError(f"cannot open {repo_root} at {rev!r}: {exc}") from None
    except AttributeError:  # DVC's git backend, given a blob or a tree (v1:dvc.lock, v1^{tree})
        raise ResolutionError(f"git revision {rev!r} in {repo_root} names no commit") from None


@dataclass(frozen=True)
class ResolvedData:
    """Verified bytes of one DVC-tracked path (a file, or each file of a directory)."""

    path: str
    md5: str  # as pinned: a file's md5, or a directory's ``<md5>.dir``
    rev: str
    commit: str
    source: str  # workspace | cache | remote (the farthest any file came from)
    files: dict[str, bytes]  # relative path in the directory ("" for a file) -> bytes
    timings_ms: dict[str, float] = field(default_factory=dict)


SOURCES = ("workspace", "cache", "remote")


def resolve_path(
    repo_root: Path,
    rev: str,
    path: str,
    remote: str | None = None,
    attempts: int = 3,
    backoff_s: float = 0.5,
) -> ResolvedData:
    """Return the verified bytes of ``path``, a file or directory that DVC tracks (a stage's
    out in dvc.lock, or a ``.dvc`` file) as pinned at ``rev``.

    A directory's listing (DVC's ``.dir`` object) is checked against the pinned md5 and each
    file against the listing, so every byte returned is the one the rev pins.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fs, commit = _open(repo_root, rev)
    try:
        try:
            info = _info(fs, path)
        except FileNotFoundError:
            raise ResolutionError(f"{path} does not exist at {rev} ({commit[:12]})") from None
        md5 = (info.get("dvc_info") or {}).get("md5") or (info.get("dvc_info") or {}).get(
            "md5-dos2unix"
        )
        if not md5:
            raise ResolutionError(
                f"{path} at {rev} ({commit[:12]}) is not tracked by DVC: no md5 pins it "
                f"(a stage out in dvc.lock, or `dvc add {path}`)"
            )
        timings["lock_ms"] = (time.perf_counter() - started) * 1000
        _log_pin(rev, commit, path, md5)
        fetch = _Fetcher(repo_root, rev, commit, path, md5, remote, attempts, backoff_s, timings)
        workspace = Path(repo_root) / path
        if not md5.endswith(".dir"):
            data, source = _verified_file(fs, workspace, md5, fetch, timings, path)
            files, sources = {"": data}, {source}
        else:
            listing, source = _verified_file(fs, None, md5, fetch, timings, f"{path} (listing)")
            files, sources = {}, {source}
            for entry in _entries(listing, path, md5):
                relpath, entry_md5 = entry["relpath"], entry["md5"]
                data, source = _verified_file(
                    fs, workspace / relpath, entry_md5, fetch, timings, f"{path}/{relpath}"
                )
                files[relpath] = data
                sources.add(source)
    finally:
        fs.close()
    source = max(sources, key=SOURCES.index)
    timings["resolve_ms"] = (time.perf_counter() - started) * 1000
    log.info(
        "resolved %s md5 %s from %s (%d file(s))",
        path,
        md5,
        source,
        len(files),
        extra={FIELDS: {"source": source, "md5": md5, "commit": commit}},
    )
    return ResolvedData(path, md5, rev, commit, source, files, timings)


def _entries(listing: bytes, path: str, md5: str) -> list[dict[str, str]]:
    """The (relpath, md5) entries of a verified ``.dir`` object."""
    import json

    try:
        entries = json.loads(listing)
        return [{"relpath": e["relpath"], "md5": e["md5"]} for e in entries]
    except (ValueError, TypeError, KeyError):
        raise ResolutionError(f"{path} md5 {md5}: the directory listing is not DVC's") from None


def _resolve_in(
    fs: Any,
    repo_root: Path,
    rev: str,
    name: str | None,
    commit: str,
    remote: str | None,
    attempts: int,
    backoff_s: float,
    timings: dict[str, float],
    started: float,
) -> Resolved:
    """The rest of :func:`resolve`, with the repo open at ``commit``."""
    name, path, md5 = _pinned(fs, name, rev, commit)
    timings["lock_ms"] = (time.perf_counter() - started) * 1000
    _log_pin(rev, commit, path, md5)
    fetch = _Fetcher(repo_root, rev, commit, path, md5, remote, attempts, backoff_s, timings)
    data, source = _verified_file(fs, Path(repo_root) / path, md5, fetch, timings, path)
    return _done(name, path, md5, rev, commit, source, data, fs, timings, started)


def _log_pin(rev: str, commit: str, path: str, md5: str) -> None:
    log.info(
        "dvc.lock at %s (%s) pins %s md5 %s",
        rev,
        commit[:12],
        path,
        md5,
        extra={FIELDS: {"rev": rev, "commit": commit, "path": path, "md5": md5}},
    )


@dataclass
class _Fetcher:
    """Fetches ``path`` as pinned at ``rev`` from the remote into the cache, once, one start
    at a time (see :func:`_one_fetch_at_a_time`); what was found locally is named on failure."""

    repo_root: Path
    rev: str
    commit: str
    path: str
    md5: str
    remote: str | None
    attempts: int
    backoff_s: float
    timings: dict[str, float]

    def __call__(self, cache_path: Path, md5: str, found: list[str]) -> str:
        """Fetch what the cache lacks and return the remote's label; after a failure nothing
        of it is left beside ``cache_path``, the object ``md5`` was to be."""
        fetch_started = time.perf_counter()
        partials = _temp_files(cache_path.parent)
        try:
            at = None if self.rev == WORKSPACE else self.commit
            label = remotes.fetch(
                self.repo_root, at, self.path, self.remote, self.attempts, self.backoff_s
            )
        except remotes.RemoteError as exc:
            if not isinstance(exc, remotes.RepoLocked):  # one that never started left nothing
                _discard_partials(cache_path, md5.removesuffix(".dir"), partials)
            raise ResolutionError(
                f"{self.path} md5 {self.md5} pinned at {self.rev}: {exc} ({'; '.join(found)})"
            ) from None
        self.timings["fetch_ms"] = (
            self.timings.get("fetch_ms", 0.0) + (time.perf_counter() - fetch_started) * 1000
        )
        return label


def _verified_file(
    fs: Any,
    workspace: Path | None,
    md5: str,
    fetch: _Fetcher,
    timings: dict[str, float],
    what: str,
) -> tuple[bytes, str]:
    """The bytes whose md5 is ``md5`` and where they came from: the work tree's copy at
    ``workspace``, the cache, else the remote (through ``fetch``). Bytes that do not match are
    never returned, and a cache entry that does not match is removed."""
    cache_path = Path(fs.repo.cache.local.oid_to_path(md5))
    expected = md5.removesuffix(".dir")  # a directory's listing is named <md5 of it>.dir
    candidates = [("cache", cache_path)]
    if workspace is not None:
        candidates.insert(0, ("workspace", workspace))
    found: list[str] = []
    for source, candidate in candidates:
        data = _read(candidate)
        if data is None:
            found.append(f"{source}: absent")
            continue
        got = _timed_md5(data, timings)
        if got == expected:
            return data, source
        found.append(f"{source}: md5 {got}")
        # the work tree holding another version than a rev pins is normal; its own lock not
        # matching it, or a cache entry that does not match its name, is not
        ordinary = source == "workspace" and fetch.rev != WORKSPACE
        log.log(
            logging.INFO if ordinary else logging.WARNING,
            "%s copy of %s has md5 %s, dvc.lock pins %s: not used",
            source,
            what,
            got,
            md5,
            extra={FIELDS: {"source": source, "expected": md5, "found": got}},
        )
        if source == "cache":
            cache_path.unlink()  # a corrupt cache entry must not be trusted by a later start

    with _one_fetch_at_a_time(fetch.repo_root):
        data = _read(cache_path)  # another start may have fetched it while this one waited
        if data is not None:
            if _timed_md5(data, timings) == expected:
                return data, "cache"
            cache_path.unlink(missing_ok=True)
        remote_label = fetch(cache_path, md5, found)
        data = _read(cache_path)
        if data is None:
            raise ResolutionError(
                f"{what} md5 {md5} pinned at {fetch.rev} is missing from {remote_label} "
                f"({'; '.join(found)})"
            )
        got = _timed_md5(data, timings)
        if got != expected:
            cache_path.unlink()
            raise ResolutionError(
                f"{what}: expected md5 {md5} (dvc.lock at {fetch.rev}), {remote_label} gave "
                f"md5 {got}; not loaded, not cached ({'; '.join(found)})"
            )
    return data, "remote"


FETCH_LOCK = Path(".dvc") / "tmp" / "lockserve-fetch.lock"


@contextlib.contextmanager
def _one_fetch_at_a_time(repo_root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the repo's FETCH_LOCK while fetching: starts that share a repo
    fetch one after the other, and the later ones find the object in the cache (DVC's own repo
    lock gives up after 3 s, failing a start whose neighbour is still downloading). The lock
    goes with the process, however it ends. Where it cannot be made, the fetch goes without."""
    lock_path = repo_root / FETCH_LOCK
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "ab")  # noqa: SIM115 - closed below, which releases the lock
    except OSError:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another start is fetching into %s; waiting for it", repo_root)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _temp_files(directory: Path) -> set[str]:
    """The hidden ``.<random>.tmp`` files DVC downloads into beside a cache object."""
    try:
        return {p.name for p in directory.iterdir() if p.name[0] == "." and p.suffix == ".tmp"}
    except OSError:
        return set()


def _discard_partials(cache_path: Path, md5: str, before: set[str]) -> None:
    """After a failed fetch, leave nothing of it in the cache: not the object unless it
    verifies, nor the temp files it started (DVC leaves a partial copy from a filesystem remote
    behind when the disk fills)."""
    data = _read(cache_path)
    if data is not None and md5_hex(data) != md5:
        cache_path.unlink(missing_ok=True)
    for name in _temp_files(cache_path.parent) - before:
        (cache_path.parent / name).unlink(missing_ok=True)


def _done(
    name: str,
    path: str,
    md5: str,
    rev: str,
    commit: str,
    source: str,
    data: bytes,
    fs: Any,
    timings: dict[str, float],
    started: float,
) -> Resolved:
    metrics = _metrics(fs)
    timings["resolve_ms"] = (time.perf_counter() - started) * 1000
    log.info(
        "resolved %s md5 %s from %s",
        path,
        md5,
        source,
        extra={
            FIELDS: {
                "source": source,
                "md5": md5,
                "commit": commit,
                **{k: round(v, 1) for k, v in timings.items()},
            }
        },
    )
    return Resolved(name, path, md5, rev, commit, source, data, metrics, timings)


def _metrics(fs: Any) -> dict[str, Any]:
    """The metrics dvc.yaml declares at that revision (git-tracked JSON), if any."""
    import json

    out: dict[str, Any] = {}
    for stage in fs.repo.index.stages:
        for metric in stage.metrics:
            try:
                out[metric.def_path] = json.loads(fs.read_text(metric.def_path))
            except (FileNotFoundError, ValueError):
                continue
    return out
