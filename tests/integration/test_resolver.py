"""Integration: rev -> dvc.lock -> md5 -> verified bytes, on a real git + DVC repo."""

import hashlib
import re

import pytest

from api.resolver import ResolutionError, resolve
from tests.conftest import run

NAME = "penguin-classifier"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cache_file(repo, digest):
    return repo / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]


def test_workspace_copy_is_used_when_it_matches(model_repo, artifacts):
    got = resolve(model_repo, "HEAD", NAME)
    assert (got.source, got.md5, got.data) == ("workspace", md5(artifacts["v2"]), artifacts["v2"])
    assert got.path == "models/model.zip" and len(got.commit) == 40


def test_another_rev_comes_from_the_cache(model_repo, artifacts):
    got = resolve(model_repo, "v1", NAME)
    assert (got.source, got.md5) == ("cache", md5(artifacts["v1"]))
    assert got.rev == "v1"


def cached(repo) -> list[str]:
    return sorted(
        p.parent.name + p.name for p in (repo / ".dvc/cache/files/md5").rglob("*") if p.is_file()
    )


def test_missing_everywhere_local_is_fetched_from_the_remote(model_repo, artifacts):
    pinned, other = md5(artifacts["v1"]), md5(artifacts["v2"])
    for digest in (pinned, other):  # an empty cache: whatever is there after came from the fetch
        cache_file(model_repo, digest).unlink()
    (model_repo / "models/model.zip").unlink()
    assert cached(model_repo) == []
    got = resolve(model_repo, "v1", NAME)
    assert (got.source, got.data) == ("remote", artifacts["v1"])
    assert cache_file(model_repo, pinned).read_bytes() == artifacts["v1"]
    assert cached(model_repo) == [pinned]  # only the object v1 pins, not v2's


def test_workspace_rev_follows_the_work_tree_lock_not_head(model_repo, artifacts):
    """`workspace`: the dvc.lock on disk (as `dvc repro` last wrote it, uncommitted)."""
    lock = model_repo / "dvc.lock"
    head, v1 = md5(artifacts["v2"]), md5(artifacts["v1"])
    lock.write_text(lock.read_text().replace(head, v1))
    (model_repo / "models/model.zip").write_bytes(artifacts["v1"])
    got = resolve(model_repo, "workspace", NAME)
    assert (got.md5, got.source, got.rev) == (v1, "workspace", "workspace")
    assert resolve(model_repo, "HEAD", NAME).md5 == head
    (model_repo / "models/model.zip").unlink()
    cache_file(model_repo, v1).unlink()
    fetched = resolve(model_repo, "workspace", NAME)  # from the remote, as the lock on disk pins
    assert (fetched.md5, fetched.source, fetched.data) == (v1, "remote", artifacts["v1"])


def test_the_one_model_artifact_is_found_without_a_name(model_repo, artifacts):
    assert resolve(model_repo, "v1", None).name == NAME


def test_tampered_work_tree_copy_is_never_returned(model_repo, artifacts):
    (model_repo / "models/model.zip").write_bytes(b"tampered")
    got = resolve(model_repo, "HEAD", NAME)
    assert got.source == "cache" and got.data == artifacts["v2"]


def test_corrupt_cache_entry_is_deleted_and_refetched(model_repo, artifacts):
    digest = md5(artifacts["v2"])
    (model_repo / "models/model.zip").unlink()
    entry = cache_file(model_repo, digest)
    entry.chmod(0o644)
    entry.write_bytes(b"half a download")
    got = resolve(model_repo, "HEAD", NAME)
    assert got.source == "remote" and got.data == artifacts["v2"]


def test_tampered_everywhere_fails_naming_expected_and_found(model_repo, artifacts):
    digest = md5(artifacts["v2"])
    (model_repo / "models/model.zip").write_bytes(b"tampered")
    cache_file(model_repo, digest).unlink()
    for obj in (model_repo.parent / "remote").rglob("*"):
        if obj.is_file() and obj.name == digest[2:]:
            obj.unlink()
    with pytest.raises(ResolutionError) as err:
        resolve(model_repo, "HEAD", NAME)
    message = str(err.value)
    assert f"md5 {digest}" in message and "is missing from remote 'local'" in message
    assert f"workspace: md5 {md5(b'tampered')}" in message and "cache: absent" in message


def test_unknown_rev_is_named(model_repo):
    with pytest.raises(ResolutionError, match="unknown git revision 'v9'"):
        resolve(model_repo, "v9", NAME)


@pytest.mark.parametrize("rev", ["v1:dvc.lock", "v1^{tree}"])
def test_a_rev_that_names_no_commit_is_named(model_repo, rev):
    with pytest.raises(
        ResolutionError, match=f"git revision '{re.escape(rev)}' .* names no commit"
    ):
        resolve(model_repo, rev, NAME)


def test_unknown_artifact_is_named(model_repo):
    with pytest.raises(ResolutionError, match="declares no artifact 'other' \\(found: penguin"):
        resolve(model_repo, "HEAD", "other")


def test_not_a_repo_is_named(tmp_path):
    with pytest.raises(ResolutionError, match="not a (git|DVC) repository"):
        resolve(tmp_path, "HEAD", NAME)


def test_unreadable_lock_is_named(model_repo):
    (model_repo / "dvc.lock").write_text("schema: '2.0'\nstages: [this is: not, a: lock\n")
    run(["git", "commit", "-qam", "break the lock"], cwd=model_repo)
    with pytest.raises(ResolutionError, match="cannot read dvc.yaml/dvc.lock at HEAD .*'dvc.lock'"):
        resolve(model_repo, "HEAD", NAME)


def test_lock_without_the_out_is_named(model_repo):
    run(["git", "rm", "-q", "dvc.lock"], cwd=model_repo)
    run(["git", "commit", "-qm", "no lock"], cwd=model_repo)
    with pytest.raises(ResolutionError, match="dvc.lock at HEAD .* pins no md5 for models/model"):
        resolve(model_repo, "HEAD", NAME)
