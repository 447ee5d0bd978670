"""Unit: fetching one pinned object from a DVC remote: which remote, the preflight probe (a
refused login fails at once, an unreachable server is retried with exponential backoff), and
one line naming the remote for every failure."""

import logging
from pathlib import Path

import pytest
from dvc.exceptions import DvcException

from api import remote
from api.remote import RemoteError, describe, fetch


class FlakyFs:
    """A remote filesystem whose ``exists`` fails with each of ``failures`` in turn."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.probed: list[str] = []

    def exists(self, path: str) -> bool:
        self.probed.append(path)
        if self.failures:
            raise self.failures.pop(0)
        return True


class Store:
    def __init__(self, fs: FlakyFs, path: str = "bucket/prefix") -> None:
        self.fs, self.path = fs, path


class FakeRepo:
    """The parts of dvc.repo.Repo that fetching uses."""

    def __init__(self, root: str, config: dict, store: Store | None, fetch_error=None) -> None:
        self.root_dir, self.config = root, config
        self.store, self.fetch_error = store, fetch_error
        self.fetched: list[dict] = []
        self.closed = False

    @property
    def cloud(self):
        return self

    def get_remote(self, name: str) -> Store:
        if self.store is None:
            raise DvcException(f"remote '{name}' doesn't exist")
        return self.store

    def fetch(self, **kwargs) -> int:
        self.fetched.append(kwargs)
        if self.fetch_error:
            raise self.fetch_error
        return 1

    def __enter__(self) -> "FakeRepo":
        return self

    def __exit__(self, *exc) -> None:
        self.closed = True


CONFIG = {
    "core": {"remote": "storage"},
    "remote": {"storage": {"url": "s3://models/lockserve"}, "backup": {"url": "/mnt/backup"}},
}


@pytest.fixture()
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(remote.time, "sleep", slept.append)
    return slept


def use_repo(monkeypatch, repo: FakeRepo) -> list[str]:
    opened: list[str] = []

    def open_repo(root: str) -> FakeRepo:
        opened.append(root)
        return repo

    monkeypatch.setattr("dvc.repo.Repo", open_repo)
    return opened


def test_describe_names_the_remote_and_its_url():
    repo = FakeRepo("/r", CONFIG, None)
    assert describe(repo, "storage") == "remote 'storage' (s3://models/lockserve)"
    assert describe(repo, "nowhere") == "remote 'nowhere' (?)"
    assert describe(FakeRepo("/r", {"remote": {"bare": {}}}, None), "bare") == "remote 'bare' (?)"


def test_a_pinned_commit_fetches_exactly_that_path_at_that_commit(monkeypatch, sleeps):
    fs = FlakyFs()
    repo = FakeRepo("/work/repo", CONFIG, Store(fs))
    opened = use_repo(monkeypatch, repo)
    label = fetch(Path("/work/repo"), "abc123", "models/model.zip", None, 3, 0.5)
    assert label == "remote 'storage' (s3://models/lockserve)"
    assert opened == ["/work/repo"] and repo.closed
    assert fs.probed == ["bucket/prefix"]
    assert repo.fetched == [
        {
            "targets": ["models/model.zip"],
            "revs": ["abc123"],
            "workspace": False,
            "remote": "storage",
        }
    ]
    assert sleeps == []


def test_the_work_tree_fetches_the_path_under_the_repo_root(monkeypatch, sleeps):
    repo = FakeRepo("/work/repo", CONFIG, Store(FlakyFs()))
    use_repo(monkeypatch, repo)
    fetch(Path("/work/repo"), None, "models/model.zip", None, 3, 0.5)
    assert repo.fetched == [{"targets": ["/work/repo/models/model.zip"], "remote": "storage"}]


def test_a_named_remote_wins_over_the_default(monkeypatch, sleeps):
    repo = FakeRepo("/r", CONFIG, Store(FlakyFs()))
    use_repo(monkeypatch, repo)
    assert fetch(Path("/r"), "c", "m.zip", "backup", 3, 0.5) == "remote 'backup' (/mnt/backup)"
    assert repo.fetched[0]["remote"] == "backup"


def test_no_remote_configured_is_named(monkeypatch, sleeps):
    use_repo(monkeypatch, FakeRepo("/r", {"core": {}, "remote": {}}, None))
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", None, 3, 0.5)
    assert str(err.value) == "no DVC remote is configured (set a default or LOCKSERVE_REMOTE)"


def test_an_unknown_remote_is_named(monkeypatch, sleeps):
    use_repo(monkeypatch, FakeRepo("/r", CONFIG, None))
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", "nope", 3, 0.5)
    assert str(err.value) == "remote 'nope' (?): remote 'nope' doesn't exist"


def test_a_refused_login_fails_at_once_naming_the_credentials(monkeypatch, sleeps):
    fs = FlakyFs(PermissionError("Access Denied"), OSError("never reached"))
    repo = FakeRepo("/r", CONFIG, Store(fs))
    use_repo(monkeypatch, repo)
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", None, 5, 0.5)
    assert str(err.value) == (
        "remote 'storage' (s3://models/lockserve) answered 403 Forbidden (Access Denied): check "
        "its credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or .dvc/config.local)"
    )
    assert len(fs.probed) == 1 and sleeps == [] and repo.fetched == []


def test_an_unreachable_remote_is_retried_with_exponential_backoff(monkeypatch, sleeps, caplog):
    fs = FlakyFs(ConnectionError("refused"), TimeoutError("slow"), OSError("reset"))
    repo = FakeRepo("/r", CONFIG, Store(fs))
    use_repo(monkeypatch, repo)
    with caplog.at_level(logging.WARNING, logger="lockserve.remote"):
        assert fetch(Path("/r"), "c", "m.zip", None, 4, 0.5).startswith("remote 'storage'")
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(fs.probed) == 4 and len(repo.fetched) == 1
    retries = [r for r in caplog.records if r.name == "lockserve.remote"]
    assert [r.fields for r in retries] == [
        {"attempt": 1, "retry_in_s": 0.5},
        {"attempt": 2, "retry_in_s": 1.0},
        {"attempt": 3, "retry_in_s": 2.0},
    ]
    first = retries[0].getMessage()
    assert "remote 'storage'" in first and "1/4" in first and "refused" in first
    assert "0.5 s" in first


def test_a_remote_unreachable_every_time_names_the_attempts(monkeypatch, sleeps):
    fs = FlakyFs(*(ConnectionError(f"refused {i}") for i in range(3)))
    repo = FakeRepo("/r", CONFIG, Store(fs))
    use_repo(monkeypatch, repo)
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", None, 3, 0.25)
    assert str(err.value) == (
        "remote 'storage' (s3://models/lockserve) unreachable after 3 attempts: refused 2"
    )
    assert sleeps == [0.25, 0.5] and repo.fetched == []


def test_one_attempt_means_no_retry(monkeypatch, sleeps):
    use_repo(monkeypatch, FakeRepo("/r", CONFIG, Store(FlakyFs(ConnectionError("down")))))
    with pytest.raises(RemoteError, match="unreachable after 1 attempts: down$"):
        fetch(Path("/r"), "c", "m.zip", None, 1, 0.5)
    assert sleeps == []


def test_a_failed_fetch_is_one_line_naming_the_remote(monkeypatch, sleeps):
    error = DvcException("1 files failed to fetch")
    use_repo(monkeypatch, FakeRepo("/r", CONFIG, Store(FlakyFs()), fetch_error=error))
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", None, 3, 0.5)
    assert str(err.value) == (
        "remote 'storage' (s3://models/lockserve): fetch failed: 1 files failed to fetch"
    )


def test_one_line_drops_colours_and_line_breaks_and_keeps_it_short():
    assert remote.one_line("\x1b[31mUnable\x1b[0m to\n  acquire\tlock") == "Unable to acquire lock"
    assert remote.one_line("x" * 300) == "x" * 300
    assert remote.one_line("x" * 301) == "x" * 297 + "..."
    assert remote.one_line("abcdef", limit=5) == "ab..."


def test_a_cause_names_the_failure_and_the_one_it_arose_from():
    try:
        try:
            raise ConnectionError("payload not completed\n(received 5 of 9 bytes)")
        except ConnectionError as first:
            raise OSError("Could not connect") from first
    except OSError as exc:
        assert remote.cause(exc) == (
            "Could not connect, after: payload not completed (received 5 of 9 bytes)"
        )
    assert remote.cause(ValueError()) == "ValueError"
    repeated = RuntimeError("same")
    repeated.__context__ = RuntimeError("same")
    assert remote.cause(repeated) == "same"
    chain = RuntimeError("a")
    chain.__cause__ = RuntimeError("b")
    chain.__cause__.__cause__ = RuntimeError("c")
    assert remote.cause(chain) == "a, after: b"  # two links at most


def test_a_failed_transfer_keeps_its_cause_and_drops_the_traceback_record():
    failures = remote.TransferFailures()
    plain = logging.LogRecord("dvc_data", logging.INFO, "", 0, "copied", (), None)
    assert failures.filter(plain) is True and failures.causes == []
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        import sys

        failed = logging.LogRecord("t", logging.ERROR, "", 0, "failed", (), sys.exc_info())
    assert failures.filter(failed) is False
    assert failures.causes == ["[Errno 28] No space left on device"]


def test_a_fetch_that_fails_says_why_on_its_one_line(monkeypatch, sleeps):
    class Failing(FakeRepo):
        def fetch(self, **kwargs) -> int:
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                logging.getLogger(remote.TransferFailures.LOGGER).exception("failed to transfer")
            raise DvcException("1 files failed to download")

    use_repo(monkeypatch, Failing("/r", CONFIG, Store(FlakyFs())))
    with pytest.raises(RemoteError) as err:
        fetch(Path("/r"), "c", "m.zip", None, 3, 0.5)
    assert str(err.value) == (
        "remote 'storage' (s3://models/lockserve): fetch failed: 1 files failed to download: "
        "[Errno 28] No space left on device"
    )
    assert logging.getLogger(remote.TransferFailures.LOGGER).filters == []


def test_a_repo_another_process_has_locked_is_named_as_such(monkeypatch, sleeps):
    from dvc.lock import LockError

    repo = FakeRepo("/r", CONFIG, Store(FlakyFs()), fetch_error=LockError("Unable to acquire lock"))
    use_repo(monkeypatch, repo)
    with pytest.raises(remote.RepoLocked) as err:
        fetch(Path("/r"), "c", "m.zip", None, 3, 0.5)
    assert str(err.value) == (
        "remote 'storage' (s3://models/lockserve): fetch failed: Unable to acquire lock"
    )
