"""Unit: how the resolver turns a rev into verified bytes, against a stand-in for DVC's
filesystem: which copy wins (work tree, cache, remote), that bytes with the wrong md5 are never
returned (and a corrupt cache entry is deleted), what each failure says, and what a resolution
reports (metrics, timings, log lines). tests/integration/test_resolver.py does the same on a
real git + DVC repo."""

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dvc.exceptions import DvcException, NotDvcRepoError
from dvc.scm import RevError

from api import resolver
from api.remote import RemoteError, RepoLocked
from api.resolver import ResolutionError, git_rev, resolve

V1, V2 = b"model bytes v1", b"model bytes v2"
COMMIT = "0123456789abcdef" * 2 + "01234567"
PATH = "models/model.zip"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class Artifact:
    path: str
    type: str | None = "model"


@dataclass
class Metric:
    def_path: str


@dataclass
class Stage:
    metrics: list[Metric]


@dataclass
class Pins:
    """What dvc.yaml declares and dvc.lock pins at the rev, and the metrics files there."""

    declared: dict[str, Artifact] = field(
        default_factory=lambda: {"penguin-classifier": Artifact(PATH)}
    )
    md5s: dict[str, str] = field(default_factory=lambda: {PATH: md5(V1)})
    info_key: str = "md5"  # DVC puts an out's md5 at the top or under dvc_info
    metrics: dict[str, str] = field(default_factory=dict)  # path -> text
    stages: list[Stage] = field(default_factory=list)
    artifacts_error: Exception | None = None
    info_error: Exception | None = None
    info_locked: int = 0  # times DVC's index database is locked by another process first


class Fs:
    """The parts of dvc.api.DVCFileSystem the resolver uses."""

    def __init__(self, pins: Pins, cache: Path) -> None:
        self.pins, self.cache_dir = pins, cache
        self.repo = self
        self.closed = False

    def close(self) -> None:
        self.closed = True

    # fs.repo.*
    def get_rev(self) -> str:
        return COMMIT

    @property
    def artifacts(self):
        return self

    def read(self):
        if self.pins.artifacts_error:
            raise self.pins.artifacts_error
        return {"dvc.yaml": self.pins.declared}

    @property
    def cache(self):
        return self

    @property
    def local(self):
        return self

    def oid_to_path(self, oid: str) -> str:
        return str(self.cache_dir / oid[:2] / oid[2:])

    @property
    def index(self):
        return self

    @property
    def stages(self):
        return self.pins.stages

    # fs.*
    def info(self, path: str) -> dict:
        if self.pins.info_locked:
            self.pins.info_locked -= 1
            raise sqlite3.OperationalError("database is locked")
        if self.pins.info_error:
            raise self.pins.info_error
        if path not in self.pins.md5s:
            raise FileNotFoundError(path)
        value = self.pins.md5s[path]
        return {"md5": value} if self.pins.info_key == "md5" else {"dvc_info": {"md5": value}}

    def read_text(self, path: str) -> str:
        if path not in self.pins.metrics:
            raise FileNotFoundError(path)
        return self.pins.metrics[path]


@dataclass
class World:
    root: Path
    cache: Path
    pins: Pins
    opened: list = field(default_factory=list)
    filesystems: list = field(default_factory=list)
    fetches: list = field(default_factory=list)
    remote_bytes: bytes | None = None  # what a fetch puts in the cache
    remote_error: str | None = None
    open_error: Exception | None = None
    partial: bytes | None = None  # what a failing fetch leaves: the object, and a temp file
    locked: bool = False  # the fetch finds the repo locked by another process

    def workspace(self, data: bytes) -> None:
        (self.root / PATH).parent.mkdir(parents=True, exist_ok=True)
        (self.root / PATH).write_bytes(data)

    def cache_file(self, digest: str) -> Path:
        return self.cache / digest[:2] / digest[2:]

    def cached(self, digest: str, data: bytes) -> None:
        self.cache_file(digest).parent.mkdir(parents=True, exist_ok=True)
        self.cache_file(digest).write_bytes(data)


@pytest.fixture()
def world(tmp_path, monkeypatch) -> World:
    w = World(tmp_path / "repo", tmp_path / "repo" / ".dvc" / "cache", Pins())
    w.root.mkdir()

    def filesystem(root: str, rev: str | None = None) -> Fs:
        w.opened.append((root, rev))
        if w.open_error:
            raise w.open_error
        w.filesystems.append(Fs(w.pins, w.cache))
        return w.filesystems[-1]

    def fetch(repo_root, commit, path, remote, attempts, backoff_s) -> str:
        w.fetches.append((repo_root, commit, path, remote, attempts, backoff_s))
        if w.partial is not None:
            w.cached(w.pins.md5s[path], w.partial)
            (w.cache_file(w.pins.md5s[path]).parent / ".a1b2c3.tmp").write_bytes(w.partial)
        if w.locked:
            raise RepoLocked("remote 'storage' (s3://models): fetch failed: Unable to acquire lock")
        if w.remote_error:
            raise RemoteError(w.remote_error)
        if w.remote_bytes is not None:
            w.cached(w.pins.md5s[path], w.remote_bytes)
        return "remote 'storage' (s3://models)"

    monkeypatch.setattr("dvc.api.DVCFileSystem", filesystem)
    monkeypatch.setattr(resolver.remotes, "fetch", fetch)
    return w


def test_the_work_tree_copy_is_used_when_its_md5_is_pinned(world):
    world.workspace(V1)
    got = resolve(world.root, "v1", "penguin-classifier")
    assert (got.name, got.path, got.md5, got.rev, got.commit) == (
        "penguin-classifier",
        PATH,
        md5(V1),
        "v1",
        COMMIT,
    )
    assert (got.source, got.data) == ("workspace", V1)
    assert world.opened == [(str(world.root), "v1")] and world.fetches == []


def test_the_cache_is_used_when_the_work_tree_copy_is_absent_or_other(world):
    world.cached(md5(V1), V1)
    assert resolve(world.root, "v1", None).source == "cache"
    world.workspace(V2)  # another version in the work tree: not used
    got = resolve(world.root, "v1", None)
    assert (got.source, got.data) == ("cache", V1)
    assert world.cache_file(md5(V1)).exists() and world.fetches == []


def test_the_work_tree_is_workspace_and_other_revs_their_commit(world):
    world.remote_bytes = V1
    resolve(world.root, "workspace", None, remote="backup", attempts=5, backoff_s=0.1)
    assert world.opened[-1] == (str(world.root), None)  # DVC's work tree, lock as on disk
    world.cache_file(md5(V1)).unlink()
    resolve(world.root, "main", None)
    assert world.opened[-1] == (str(world.root), "main")
    assert [f[1:] for f in world.fetches] == [
        (None, PATH, "backup", 5, 0.1),  # the work tree's dvc.lock
        (COMMIT, PATH, None, 3, 0.5),  # the commit the rev names; default retries
    ]


def test_missing_everywhere_local_is_fetched_and_verified(world):
    world.remote_bytes = V1
    got = resolve(world.root, "v1", None)
    assert (got.source, got.data, got.md5) == ("remote", V1, md5(V1))
    assert world.cache_file(md5(V1)).read_bytes() == V1


def test_a_corrupt_cache_entry_is_deleted_and_refetched(world, caplog):
    world.cached(md5(V1), b"rotten")
    world.remote_bytes = V1
    with caplog.at_level(logging.WARNING, logger="lockserve.resolver"):
        got = resolve(world.root, "v1", None)
    assert (got.source, got.data) == ("remote", V1)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.fields == {"source": "cache", "expected": md5(V1), "found": md5(b"rotten")}
    assert md5(b"rotten") in warning.getMessage() and PATH in warning.getMessage()


def test_a_corrupt_cache_entry_is_deleted_even_when_the_fetch_fails(world):
    world.cached(md5(V1), b"rotten")
    world.remote_error = "remote 'storage' (s3://models) unreachable after 3 attempts: down"
    with pytest.raises(ResolutionError):
        resolve(world.root, "v1", None)
    assert not world.cache_file(md5(V1)).exists()


def test_a_tampered_work_tree_copy_is_left_alone(world):
    world.workspace(b"tampered")
    world.remote_bytes = V1
    assert resolve(world.root, "v1", None).data == V1
    assert (world.root / PATH).read_bytes() == b"tampered"


def test_a_failed_fetch_names_what_was_pinned_and_what_was_found(world):
    world.workspace(b"tampered")
    world.remote_error = "remote 'storage' (s3://models) unreachable after 3 attempts: down"
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", None)
    assert str(err.value) == (
        f"{PATH} md5 {md5(V1)} pinned at v1: remote 'storage' (s3://models) unreachable after 3 "
        f"attempts: down (workspace: md5 {md5(b'tampered')}; cache: absent)"
    )


def test_an_object_the_remote_does_not_have_is_named(world):
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", None)
    assert str(err.value) == (
        f"{PATH} md5 {md5(V1)} pinned at v1 is missing from remote 'storage' (s3://models) "
        "(workspace: absent; cache: absent)"
    )


def test_bytes_from_the_remote_with_another_md5_are_refused_and_not_cached(world):
    world.remote_bytes = b"corrupt"
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", None)
    assert str(err.value) == (
        f"{PATH}: expected md5 {md5(V1)} (dvc.lock at v1), remote 'storage' (s3://models) gave "
        f"md5 {md5(b'corrupt')}; not loaded, not cached (workspace: absent; cache: absent)"
    )
    assert not world.cache_file(md5(V1)).exists()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (NotDvcRepoError("no"), "{root}: not a DVC repository"),
        (RevError("no"), "unknown git revision 'v9' in {root}"),
        (DvcException("broken config"), "cannot open {root} at 'v9': broken config"),
    ],
)
def test_a_repo_or_rev_that_cannot_be_opened_is_named(world, error, message):
    world.open_error = error
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v9", None)
    assert str(err.value) == message.format(root=world.root)


def test_a_start_waits_while_another_holds_dvcs_index(world, monkeypatch):
    monkeypatch.setattr(resolver.time, "sleep", lambda s: None)
    world.pins.info_locked = 3
    world.workspace(V1)
    assert resolve(world.root, "v1", None).md5 == md5(V1)
    world.pins.info_locked = 1000  # held for good: named, not waited for forever
    with pytest.raises(ResolutionError, match="is unreadable: database is locked"):
        resolve(world.root, "v1", None)


def test_the_md5_may_sit_under_dvc_info(world):
    world.pins.info_key = "dvc_info"
    world.workspace(V1)
    assert resolve(world.root, "v1", None).md5 == md5(V1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"artifacts_error": ValueError("bad YAML")},
            "cannot read dvc.yaml/dvc.lock at v1 (0123456789ab): bad YAML",
        ),
        ({"md5s": {}}, f"dvc.lock at v1 (0123456789ab) pins no md5 for {PATH}"),
        ({"md5s": {PATH: ""}}, f"dvc.lock at v1 (0123456789ab) pins no md5 for {PATH}"),
        (
            {"info_error": ValueError("not a mapping")},
            "dvc.lock at v1 (0123456789ab) is unreadable: not a mapping",
        ),
        (
            {"declared": {}},
            "dvc.yaml at v1 (0123456789ab) declares 0 artifacts of type model (none): "
            "set LOCKSERVE_ARTIFACT to one",
        ),
        (
            {
                "declared": {
                    "b": Artifact("b.zip"),
                    "a": Artifact("a.zip"),
                    "d": Artifact("d", "data"),
                }
            },
            "dvc.yaml at v1 (0123456789ab) declares 2 artifacts of type model (a, b): "
            "set LOCKSERVE_ARTIFACT to one",
        ),
    ],
    ids=["unreadable-yaml", "no-md5", "empty-md5", "unreadable-lock", "no-model", "two-models"],
)
def test_what_dvc_yaml_and_dvc_lock_lack_is_named(world, change, message):
    for key, value in change.items():
        setattr(world.pins, key, value)
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", None)
    assert str(err.value) == message


def test_an_artifact_is_chosen_by_name_or_as_the_one_model(world):
    world.pins.declared = {
        "penguin-classifier": Artifact(PATH),
        "features": Artifact("data/features", "data"),
    }
    world.workspace(V1)
    assert resolve(world.root, "v1", None).name == "penguin-classifier"
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", "nope")
    assert str(err.value) == (
        "dvc.yaml at v1 (0123456789ab) declares no artifact 'nope' "
        "(found: features, penguin-classifier)"
    )
    world.pins.declared = {}
    with pytest.raises(ResolutionError, match=r"declares no artifact 'nope' \(found: none\)$"):
        resolve(world.root, "v1", "nope")


def test_the_metrics_dvc_yaml_declares_come_along(world):
    world.pins.stages = [
        Stage([Metric("reports/metrics.json"), Metric("reports/gone.json")]),
        Stage([]),
        Stage([Metric("reports/broken.json"), Metric("reports/extra.json")]),
    ]
    world.pins.metrics = {
        "reports/metrics.json": '{"accuracy": 0.97}',
        "reports/broken.json": "{not json",
        "reports/extra.json": '{"rmse": 1.5}',
    }
    world.workspace(V1)
    assert resolve(world.root, "v1", None).metrics == {
        "reports/metrics.json": {"accuracy": 0.97},
        "reports/extra.json": {"rmse": 1.5},
    }


def test_timings_are_milliseconds_of_each_step(world):
    world.workspace(V1)
    started = time.perf_counter()
    local = resolve(world.root, "v1", None)
    wall_ms = (time.perf_counter() - started) * 1000
    assert set(local.timings_ms) == {"lock_ms", "verify_ms", "resolve_ms"}
    assert 0 <= local.timings_ms["lock_ms"] <= local.timings_ms["resolve_ms"] <= wall_ms
    assert local.timings_ms["verify_ms"] <= local.timings_ms["resolve_ms"]
    (world.root / PATH).unlink()
    world.remote_bytes = V1
    fetched = resolve(world.root, "v1", None)
    assert set(fetched.timings_ms) == {"lock_ms", "verify_ms", "fetch_ms", "resolve_ms"}
    assert fetched.timings_ms["fetch_ms"] <= fetched.timings_ms["resolve_ms"]


def test_a_resolution_logs_the_pin_and_where_the_bytes_came_from(world, caplog):
    world.workspace(V1)
    with caplog.at_level(logging.INFO, logger="lockserve.resolver"):
        got = resolve(world.root, "v1", None)
    pinned, resolved = [r for r in caplog.records if r.name == "lockserve.resolver"]
    assert pinned.fields == {"rev": "v1", "commit": COMMIT, "path": PATH, "md5": md5(V1)}
    assert all(s in pinned.getMessage() for s in ("v1", "0123456789ab", PATH, md5(V1)))
    assert resolved.fields == {
        "source": "workspace",
        "md5": md5(V1),
        "commit": COMMIT,
        **{k: round(v, 1) for k, v in got.timings_ms.items()},
    }
    assert resolved.getMessage() == f"resolved {PATH} md5 {md5(V1)} from workspace"


def test_timings_are_milliseconds_under_a_clock_of_whole_seconds(world, monkeypatch):
    """Under a clock that moves one second per reading, every timing is a whole 1000 ms."""
    import api.resolver

    ticks = iter(range(1000))
    monkeypatch.setattr(api.resolver.time, "perf_counter", lambda: float(next(ticks)))
    world.workspace(V1)
    timings = resolve(world.root, "v1", None).timings_ms
    assert timings and all(v > 0 and v % 1000 == 0 for v in timings.values()), timings


def test_git_rev_passes_git_names_through_and_the_work_tree_is_none(tmp_path):
    assert git_rev(tmp_path, "workspace") is None
    for rev in ("main", "v1", "HEAD~2", COMMIT, "Penguin@v1.0.0", "a@b@c"):
        assert git_rev(tmp_path, rev) == rev


class Registry:
    """dvc.repo.Repo's artifact registry (GTO tags)."""

    def __init__(self, answer) -> None:
        self.answer, self.asked = answer, []
        self.artifacts = self

    def get_rev(self, name, version=None, stage=None):
        self.asked.append((name, version, stage))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_gto_versions_and_stages_become_the_commit_they_name(tmp_path, monkeypatch):
    registry = Registry(COMMIT)
    opened = []
    monkeypatch.setattr("dvc.repo.Repo", lambda root: opened.append(root) or registry)
    assert git_rev(tmp_path, "penguin-classifier@v1.2.0") == COMMIT
    assert git_rev(tmp_path, "penguin-classifier#prod") == COMMIT
    assert registry.asked == [
        ("penguin-classifier", "v1.2.0", None),
        ("penguin-classifier", None, "prod"),
    ]
    assert opened == [str(tmp_path)] * 2


def test_a_gto_name_that_does_not_resolve_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("dvc.repo.Repo", lambda root: Registry(DvcException("no such version")))
    with pytest.raises(ResolutionError) as err:
        git_rev(tmp_path, "penguin-classifier@v9.0.0")
    assert str(err.value) == "cannot resolve 'penguin-classifier@v9.0.0' with GTO: no such version"


def test_the_repo_is_closed_whatever_the_outcome(world):
    """Its git packs and DVC index are released at once, not left to the garbage collector
    (a gunicorn master re-resolves on every reload)."""
    world.pins.md5s[PATH] = hashlib.md5(b"model").hexdigest()
    world.workspace(b"model")
    resolver.resolve(world.root, "v1", None)
    world.pins.md5s[PATH] = hashlib.md5(b"other").hexdigest()
    world.remote_error = "down"
    with pytest.raises(ResolutionError):
        resolver.resolve(world.root, "v1", None)
    assert [fs.closed for fs in world.filesystems] == [True, True]


def test_a_failed_fetch_leaves_nothing_of_itself_in_the_cache(world):
    """Not the object (it does not verify), nor the temp files it started; what was there
    before it (another start's temp file) stays."""
    folder = world.cache_file(md5(V1)).parent
    folder.mkdir(parents=True)
    (folder / ".before.tmp").write_bytes(b"someone else's")
    (folder / "not-a-temp-file").write_bytes(b"x")
    world.partial = V1[:10]
    world.remote_error = "remote 'storage' (s3://models): fetch failed: connection lost"
    with pytest.raises(ResolutionError):
        resolve(world.root, "v1", None)
    assert sorted(p.name for p in folder.iterdir()) == [".before.tmp", "not-a-temp-file"]


def test_a_failed_fetch_keeps_an_object_that_verifies(world):
    world.partial = V1  # it arrived whole; only something after it failed
    world.remote_error = "remote 'storage' (s3://models): fetch failed: another file"
    with pytest.raises(ResolutionError):
        resolve(world.root, "v1", None)
    assert world.cache_file(md5(V1)).read_bytes() == V1
    assert [p.name for p in world.cache_file(md5(V1)).parent.iterdir()] == [md5(V1)[2:]]


def test_a_fetch_that_never_started_touches_nothing(world):
    """The repo was locked by another process: what is in the cache is that process's."""
    world.partial = b"another process's download in progress"
    world.locked = True
    with pytest.raises(ResolutionError) as err:
        resolve(world.root, "v1", None)
    assert "Unable to acquire lock" in str(err.value)
    assert len(list(world.cache_file(md5(V1)).parent.iterdir())) == 2


def test_a_start_that_waited_for_another_ones_fetch_takes_it_from_the_cache(world, monkeypatch):
    import contextlib

    @contextlib.contextmanager
    def another_start_fetched_meanwhile(repo_root):
        world.cached(md5(V1), V1)
        yield

    monkeypatch.setattr(resolver, "_one_fetch_at_a_time", another_start_fetched_meanwhile)
    resolved = resolve(world.root, "v1", None)
    assert (resolved.source, resolved.data, world.fetches) == ("cache", V1, [])


def test_starts_that_share_a_repo_fetch_one_at_a_time(world, tmp_path):
    import fcntl

    lock = world.root / resolver.FETCH_LOCK
    with resolver._one_fetch_at_a_time(world.root):
        with open(lock, "ab") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the fetch is done
