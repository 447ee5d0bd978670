"""System: a workstation pushes to real S3 (SeaweedFS); a fresh deploy host serves any rev.

Workstation A: a clone that reproduces the pipeline at three train params (tags t1, t2 on main;
t3 on a branch, never pushed), registers GTO versions and pushes to the `s3` remote with
credentials in .dvc/config.local, then drops its cache. Deploy host B: a fresh clone of A with
an empty cache and the credentials in its environment only.
"""

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from api.resolver import resolve
from tests.conftest import ROOT, dvc, run
from tests.servers import (
    SERVER,
    Server,
    free_port,
    grpc_model_infer,
    http,
    json_lines,
    refused,
    running,
)

pytestmark = pytest.mark.system

NAME = "penguin-classifier"
PENGUIN = {
    "island": "Dream",
    "bill_depth_mm": 17.0,
    "flipper_length_mm": 195.0,
    "body_mass_g": 3900.0,
    "sex": "female",
}


def lock_md5(repo: Path, rev: str) -> str:
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], cwd=repo).stdout)
    return lock["stages"]["train"]["outs"][0]["md5"]


def commit_with_trees(repo: Path, n_trees: int, tag: str) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["random_forest"]["n_estimators"] = n_trees
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "-q", cwd=repo)
    run(["git", "commit", "-qam", f"{n_trees} trees"], cwd=repo)
    run(["git", "tag", tag], cwd=repo)


@pytest.fixture(scope="module")
def workstation(tmp_path_factory, s3):
    repo = tmp_path_factory.mktemp("workstation") / "a"
    run(["git", "clone", "-q", str(ROOT), str(repo)], cwd=ROOT)
    run(["git", "config", "user.email", "workstation@example.com"], cwd=repo)
    run(["git", "config", "user.name", "workstation"], cwd=repo)
    for key, value in (
        ("endpointurl", s3.endpoint),
        ("access_key_id", s3.access_key),
        ("secret_access_key", s3.secret_key),
    ):
        dvc("remote", "modify", "--local", "s3", key, value, cwd=repo)
    run([sys.executable, "-m", "tools.data"], cwd=repo)
    dvc("repro", "-q", cwd=repo)
    run(["git", "tag", "t1"], cwd=repo)
    commit_with_trees(repo, 10, "t2")
    for tag, version in (("t1", "v1.0.0"), ("t2", "v2.0.0")):
        run(
            [str(Path(sys.executable).parent / "gto"), "register", NAME, tag, "--version", version],
            cwd=repo,
        )
    run(
        [
            str(Path(sys.executable).parent / "gto"),
            "assign",
            NAME,
            "--version",
            "v1.0.0",
            "--stage",
            "prod",
        ],
        cwd=repo,
    )
    dvc("push", "-q", "-r", "s3", "--all-tags", cwd=repo)
    run(["git", "checkout", "-q", "-b", "experiment"], cwd=repo)
    commit_with_trees(repo, 20, "t3")  # reproduced, committed, never pushed
    run(["git", "checkout", "-q", "-"], cwd=repo)
    dvc("checkout", "-q", cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo


@pytest.fixture()
def host(tmp_path, workstation):
    """A fresh clone of the workstation: no cache, no data, no credentials on disk."""
    repo = tmp_path / "b"
    run(["git", "clone", "-q", str(workstation), str(repo)], cwd=tmp_path)
    return repo


def s3_env(s3, **over: str) -> dict[str, str]:
    return {**s3.env(), "LOCKSERVE_REMOTE": "s3", "WEB_CONCURRENCY": "1", **over}


def cached_objects(repo: Path) -> list[str]:
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    if not cache.exists():
        return []
    return sorted(p.parent.name + p.name for p in cache.rglob("*") if p.is_file())


def test_deploy_host_fetches_only_the_pinned_model_and_serves_it(host, workstation, s3, tmp_path):
    pinned = lock_md5(workstation, "HEAD")
    port, grpc_port = free_port(), free_port()
    server = Server(
        ["make", "deploy"],
        host,
        port,
        tmp_path / "log",
        LOCKSERVE_GRPC_PORT=str(grpc_port),
        **s3_env(s3),
    )
    try:
        server.wait_ready(timeout=180)
        status, body = http("POST", server.base + "/predict", {"instances": [PENGUIN]})
        described = http("GET", server.base + "/model")[1]
        over_grpc = grpc_model_infer(f"127.0.0.1:{grpc_port}", described["name"], PENGUIN)
    finally:
        server.stop()
    assert status == 200 and body["model"]["md5"] == pinned
    assert over_grpc == (True, pinned, body["predictions"][0]["label"])  # gRPC from api.lock
    assert described["source"] == "remote" and described["rev"] == "HEAD"
    assert cached_objects(host) == [pinned]
    data_files = [p for p in (host / "data").rglob("*") if p.is_file()]
    assert sorted(p.name for p in data_files) == [".gitignore"] * 3 + ["penguins.csv.dvc"]
    site = next((host / ".venv" / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("palmerpenguins*")) and not list(site.glob("pytest*"))
    lines = json_lines(server.output())
    ready = next(line for line in lines if line["msg"].startswith(f"model {pinned} ready"))
    assert {"fetch_ms", "verify_ms", "load_ms"} <= set(ready)
    assert any("ready_ms" in line for line in lines)


def test_each_rev_serves_its_own_model(host, workstation, s3, tmp_path):
    from api.artifact import load
    from api.backends import OnnxBackend

    seen = {}
    for tag in ("t1", "t2"):
        with running(
            SERVER,
            ROOT,
            tmp_path / f"{tag}.log",
            LOCKSERVE_REPO=str(host),
            **s3_env(s3, LOCKSERVE_REV=tag),
        ) as server:
            body = http("POST", server.base + "/predict", {"instances": [PENGUIN]})[1]
        md5 = lock_md5(workstation, tag)
        assert body["model"] == {"variant": "default", "name": NAME, "md5": md5, "rev": tag}
        data = (host / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()
        artifact = load(data, md5)
        row = tuple(PENGUIN[name] for name in artifact.schema.names)
        direct = OnnxBackend(artifact).predict([row])[0].tolist()
        assert list(body["predictions"][0]["probabilities"].values()) == direct
        seen[tag] = md5
    assert seen["t1"] != seen["t2"]


def test_gto_version_and_stage_name_what_to_serve(host, workstation, s3, tmp_path, monkeypatch):
    for key, value in s3_env(s3).items():
        monkeypatch.setenv(key, value)
    by_stage = resolve(host, f"{NAME}#prod", NAME, "s3")
    assert by_stage.md5 == lock_md5(workstation, "t1")
    assert by_stage.commit == run(["git", "rev-parse", "t1^{commit}"], cwd=host).stdout.strip()
    assert resolve(host, f"{NAME}@v2.0.0", NAME, "s3").md5 == lock_md5(workstation, "t2")

    def served_by_stage(log: str) -> dict:
        with running(
            SERVER,
            ROOT,
            tmp_path / log,
            LOCKSERVE_REPO=str(host),
            **s3_env(s3, LOCKSERVE_REV=f"{NAME}#prod"),
        ) as server:
            return http("POST", server.base + "/predict", {"instances": [PENGUIN]})[1]["model"]

    before = served_by_stage("prod-v1.log")
    assert (before["rev"], before["md5"]) == (f"{NAME}#prod", lock_md5(workstation, "t1"))
    # promotion: the workstation assigns prod to v2.0.0; the host fetches tags and restarts
    gto = str(Path(sys.executable).parent / "gto")
    run([gto, "assign", NAME, "--version", "v2.0.0", "--stage", "prod"], cwd=workstation)
    run(["git", "fetch", "-q", "--tags"], cwd=host)
    after = served_by_stage("prod-v2.log")
    assert (after["rev"], after["md5"]) == (f"{NAME}#prod", lock_md5(workstation, "t2"))


def refused_on(host: Path, tmp_path: Path, **env: str) -> str:
    """The one CRITICAL line of a server on ``host`` that must refuse to start."""
    return refused(SERVER, ROOT, tmp_path / "log", LOCKSERVE_REPO=str(host), **env)[0]


def test_wrong_credentials_fail_naming_the_remote_and_the_403(host, s3, tmp_path):
    message = refused_on(host, tmp_path, **s3_env(s3, AWS_SECRET_ACCESS_KEY="wrong-secret"))
    assert "remote 's3' (s3://lockserve/dvc) answered 403 Forbidden" in message
    assert cached_objects(host) == []


def test_s3_down_is_retried_with_backoff_then_fails(host, s3, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    message = refused_on(
        host,
        tmp_path,
        **s3_env(
            s3,
            AWS_ENDPOINT_URL=down,
            AWS_MAX_ATTEMPTS="1",
            LOCKSERVE_FETCH_ATTEMPTS="3",
            LOCKSERVE_FETCH_BACKOFF_S="0.1",
        ),
    )
    assert "remote 's3' (s3://lockserve/dvc) unreachable after 3 attempts" in message
    retries = [
        line
        for line in json_lines((tmp_path / "log").read_text())
        if line["logger"] == "lockserve.remote"
    ]
    assert [r["retry_in_s"] for r in retries] == [0.1, 0.2]


def test_object_missing_from_the_remote_names_md5_and_remote(host, workstation, s3, tmp_path):
    md5 = lock_md5(workstation, "t3")
    message = refused_on(host, tmp_path, **s3_env(s3, LOCKSERVE_REV="t3"))
    assert f"models/model.zip md5 {md5} pinned at t3 is missing from remote 's3'" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_interrupted_download_is_never_loaded_or_kept(
    host, workstation, s3, tmp_path, damage
):
    import s3fs

    md5 = lock_md5(workstation, "t2")
    fs = s3fs.S3FileSystem(key=s3.access_key, secret=s3.secret_key, endpoint_url=s3.endpoint)
    key = f"lockserve/dvc/files/md5/{md5[:2]}/{md5[2:]}"
    good = fs.cat(key)
    bad = b"not a model" if damage == "garbage" else good[: len(good) // 2]
    fs.pipe(key, bad)
    try:
        for _ in range(2):  # a later start trusts nothing the first one left behind
            message = refused_on(host, tmp_path, **s3_env(s3, LOCKSERVE_REV="t2"))
            assert f"expected md5 {md5}" in message
            assert f"gave md5 {hashlib.md5(bad).hexdigest()}; not loaded" in message
            assert cached_objects(host) == []
    finally:
        fs.pipe(key, good)


def test_no_credentials_in_tracked_files(workstation, s3):
    tracked = run(["git", "ls-files"], cwd=workstation).stdout.split()
    for name in tracked:
        path = workstation / name
        if path.is_file():
            text = path.read_bytes()
            assert s3.secret_key.encode() not in text and s3.access_key.encode() not in text
    config = (workstation / ".dvc/config").read_text()
    assert "secret_access_key" not in config and "access_key_id" not in config
    assert "secret_access_key" in (workstation / ".dvc/config.local").read_text()
    ignored = run(["git", "status", "--porcelain", "--ignored", ".dvc"], cwd=workstation).stdout
    assert "!! .dvc/config.local" in ignored
    assert "config.local" not in tracked
