"""System: `python -m package` builds deployable artifacts of one pinned rev, and each one runs.

The model repo pins v1 then v2 (HEAD); the artifacts are of v1, fetched from the remote (the
cache is emptied first). The Lambda zip answers API Gateway events through the real runtime
client (awslambdaric, from the zip itself, on a bare interpreter) against a local Runtime API;
the systemd tarball is installed and its unit's command serves with Debian's python3.11, and
systemd-analyze verifies the unit; the OCI image, built by buildah with no daemon, runs in
podman from its exported archive. Each refuses a changed model.

Where the machine cannot build or run containers the image tests say why in their skip reason;
with LOCKSERVE_REQUIRE_OCI=1 (set by .ci/run) they fail instead.
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import PENGUIN, ROOT, run, venv_env
from tests.containers import PODMAN, RUN, STORAGE, need_containers
from tests.lambda_runtime import FakeRuntimeApi, http_api_v2_event, start_runtime
from tests.servers import Server, free_port, http, json_lines

pytestmark = pytest.mark.system

DEBIAN_PYTHON = "/usr/bin/python3.11"
BODY = {"instances": [PENGUIN]}


def lock_md5(repo: Path, rev: str) -> str:
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], cwd=repo).stdout)
    return lock["stages"]["train"]["outs"][0]["md5"]


def package(repo: Path, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "package", "--repo", str(repo), "--out", str(out), *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stderr}")
    return proc


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory, model_repo_template) -> Path:
    """A copy of the model repo with an empty cache: v1 comes from the remote."""
    base = tmp_path_factory.mktemp("package") / "m"
    shutil.copytree(model_repo_template, base, symlinks=True)
    repo = base / "repo"
    run(
        [sys.executable, "-m", "dvc", "remote", "modify", "--local", "local", "url"]
        + [str(base / "remote")],
        cwd=repo,
    )
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    return repo


@pytest.fixture(scope="module")
def v1(repo) -> dict:
    commit = run(["git", "rev-parse", "v1^{commit}"], cwd=repo).stdout.strip()
    return {"md5": lock_md5(repo, "v1"), "commit": commit}


@pytest.fixture(scope="module")
def dist(repo, tmp_path_factory) -> Path:
    """The Lambda and systemd artifacts of v1, the systemd one for an install in a temp root."""
    out = tmp_path_factory.mktemp("dist")
    root = tmp_path_factory.mktemp("host")
    package(repo, out, "--rev", "v1", "--target", "lambda")
    package(
        repo,
        out,
        "--rev",
        "v1",
        "--target",
        "systemd",
        "--set",
        f"prefix={root}/opt/lockserve",
        "--set",
        f"env_file={root}/etc/lockserve/lockserve.env",
        "--set",
        f"python={DEBIAN_PYTHON}",
    )
    return out


def test_each_manifest_names_the_pinned_model(dist, v1, repo):
    assert lock_md5(repo, "v1") != lock_md5(repo, "v2")  # HEAD pins another model
    for target in ("lambda", "systemd"):
        facts = manifest(dist / target)
        assert (facts["md5"], facts["commit"], facts["rev"]) == (v1["md5"], v1["commit"], "v1")
        assert facts["backend"] == "onnx" and facts["requirements"] == "runtime.lock"
        for name, info in facts["files"].items():
            assert (dist / target / name).stat().st_size == info["bytes"]


def test_package_refuses_what_does_not_verify(repo, tmp_path):
    out = tmp_path / "dist"
    unknown = package(repo, out, "--rev", "no-such-rev", "--target", "lambda", check=False)
    assert unknown.returncode == 1
    assert "unknown git revision 'no-such-rev'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    md5 = lock_md5(repo, "v1")
    remote_file = Path(
        run([sys.executable, "-m", "dvc", "remote", "list", "--local"], cwd=repo).stdout.split()[1]
    )
    stored = remote_file / "files" / "md5" / md5[:2] / md5[2:]
    good = stored.read_bytes()
    cache = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    kept = cache.read_bytes() if cache.exists() else None
    cache.unlink(missing_ok=True)
    try:
        stored.chmod(0o644)
        stored.write_bytes(good[:-10] + b"0123456789")
        proc = package(repo, out, "--rev", "v1", "--target", "lambda", check=False)
    finally:
        stored.write_bytes(good)
        if kept is not None:
            cache.write_bytes(kept)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]  # DVC's fetch drops what does not verify
    assert f"package: models/model.zip md5 {md5} pinned at v1 is missing from" in last
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing is written before the model verifies


# -- AWS Lambda


@pytest.fixture(scope="module")
def task(dist, tmp_path_factory) -> Path:
    """The Lambda zip unpacked, as Lambda unpacks it into /var/task."""
    (archive,) = (dist / "lambda").glob("*.zip")
    folder = tmp_path_factory.mktemp("task")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
        unzipped = sum(info.file_size for info in zipped.infolist())
    facts = manifest(dist / "lambda")
    assert unzipped == facts["unzipped_bytes"] <= facts["limit_bytes"] == 262_144_000
    assert not list(folder.glob("awslambdaric*"))  # Lambda's runtime brings its own
    return folder


def test_lambda_answers_through_the_runtime_client(task, v1, tmp_path):
    with FakeRuntimeApi() as api:
        proc = start_runtime(api, task, tmp_path / "lambda.log")
        try:
            kind, answer = api.invoke(http_api_v2_event("POST", "/predict", BODY))
            assert kind == "response", answer
            assert answer["statusCode"] == 200, answer
            body = json.loads(answer["body"])
            assert body["model"]["md5"] == v1["md5"]
            assert body["predictions"][0]["label"] == "Gentoo"

            kind, answer = api.invoke(http_api_v2_event("GET", "/model"))
            described = json.loads(answer["body"])
            assert described["source"] == "bundle" and described["commit"] == v1["commit"]

            kind, answer = api.invoke(
                http_api_v2_event("POST", "/predict", {"instances": [{"island": "Mars"}]})
            )
            assert answer["statusCode"] == 422
            assert "island" in json.loads(answer["body"])["error"]["message"]
        finally:
            proc.kill()
            proc.wait()
    log = json_lines((tmp_path / "lambda.log").read_text())
    ready = [line for line in log if line.get("msg", "").startswith(f"model {v1['md5']} ready")]
    assert len(ready) == 1  # one cold start for three invocations


def test_lambda_refuses_a_changed_model(task, v1, tmp_path):
    changed = tmp_path / "task"
    shutil.copytree(task, changed, symlinks=True)
    model = changed / "bundle" / "model.zip"
    model.write_bytes(model.read_bytes() + b"\0")
    with FakeRuntimeApi() as api:
        proc = start_runtime(api, changed, tmp_path / "lambda.log")
        try:
            deadline = time.monotonic() + 60
            while api.init_error is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait()
        assert api.next_calls == 0  # never asked for an invocation
    assert api.init_error is not None, (tmp_path / "lambda.log").read_text()
    message = api.init_error["errorMessage"]
    assert message.startswith("refusing to start: ")
    assert f"pinned {v1['md5']}: the bundled model was changed" in message


# -- systemd


def unit_environment(unit: str, env_file: Path) -> dict[str, str]:
    """What systemd puts in the service's environment: Environment=, then the env file's
    settings, which override them."""
    env: dict[str, str] = {}
    for line in unit.splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def installed(dist) -> dict:
    """The systemd tarball unpacked at /, as the README says (its paths are under a temp root),
    and the env file made from its example (a first install)."""
    facts = manifest(dist / "systemd")
    prefix = facts["prefix"].lstrip("/")
    (archive,) = (dist / "systemd").glob("*.tar.gz")
    names = run(["tar", "-tzf", str(archive)], cwd=dist).stdout.split()
    assert [n for n in names if not n.startswith(prefix + "/")] == [
        "etc/systemd/system/lockserve.service"
    ]
    assert f"{prefix}/lockserve.env.example" in names  # never the host's env file itself
    listing = run(["tar", "-tvzf", str(archive)], cwd=dist).stdout.splitlines()
    folders = [line for line in listing if line.startswith("d")]
    assert folders and all(line.startswith("drwxr-xr-x") for line in folders)  # any umask
    run(["tar", "-C", "/", "-xzf", str(archive), "--exclude", "etc/systemd/*"], cwd=dist)
    env_file = Path(facts["env_file"])
    env_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(facts["prefix"]) / "lockserve.env.example", env_file)
    return facts


def test_systemd_unit_verifies(dist, installed):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (`make package-tools` installs systemd)")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(dist / "systemd" / "lockserve.service")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stderr
    unit = (dist / "systemd" / "lockserve.service").read_text()
    for line in ("DynamicUser=yes", "Restart=on-failure", "RestartPreventExitStatus=3"):
        assert line in unit.splitlines()
    assert f"EnvironmentFile={installed['env_file']}" in unit


def test_systemd_install_serves_the_pinned_model(dist, installed, v1, tmp_path):
    unit = (dist / "systemd" / "lockserve.service").read_text()
    (exec_start,) = [
        line.removeprefix("ExecStart=").split()
        for line in unit.splitlines()
        if line.startswith("ExecStart=")
    ]
    assert exec_start[:2] == [DEBIAN_PYTHON, "-S"]
    env = unit_environment(unit, Path(installed["env_file"]))
    assert env["LOCKSERVE_BUNDLE_MD5"] == v1["md5"]
    for key in ("HOST", "PORT"):  # the env file's 127.0.0.1:8000; here, a free port
        env.pop(key)
    # systemd makes /run/lockserve and /var/lib/lockserve for the unit, and listens for its
    # READY=1 (Type=notify); here, temp folders and a socket of the test's
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env.update(
        PATH="/usr/bin:/bin",
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
        LOCKSERVE_STATE_DB=str(tmp_path / "state.sqlite"),
        LOCKSERVE_GRPC_PORT="0",
        WEB_CONCURRENCY="1",
        NOTIFY_SOCKET=str(tmp_path / "notify"),
    )
    server = Server(exec_start, Path(installed["prefix"]), free_port(), tmp_path / "u.log", **env)
    try:
        assert notify.recv(4096).startswith(b"READY=1")
        server.wait_ready()
        status, body = http("POST", f"{server.base}/predict", BODY)
        assert status == 200 and body["model"]["md5"] == v1["md5"]
        assert http("GET", f"{server.base}/model")[1]["source"] == "bundle"
        no_dvc = subprocess.run(
            [DEBIAN_PYTHON, "-S", "-c", "import dvc"], env=env, capture_output=True, text=True
        )
        assert "No module named 'dvc'" in no_dvc.stderr  # the install serves without DVC
    finally:
        code = server.stop()
        notify.close()
    assert code == 0, server.output()


# -- OCI image


@pytest.fixture(scope="module")
def image(repo, tmp_path_factory) -> dict:
    need_containers()
    out = tmp_path_factory.mktemp("dist-oci")
    package(repo, out, "--rev", "v1", "--target", "oci")
    facts = manifest(out / "oci")
    (archive,) = (out / "oci").glob("*.oci.tar")
    return {**facts, "archive": archive}


def inspect(reference: str, *flags: str) -> dict:
    proc = run(["skopeo", "inspect", *flags, reference], cwd=ROOT)
    return json.loads(proc.stdout)


def test_image_labels_match_the_lock(image, v1):
    reference = f"oci-archive:{image['archive']}"
    labels = inspect(reference)["Labels"]
    assert labels["dev.lockserve.model.md5"] == v1["md5"]
    assert labels["org.opencontainers.image.revision"] == v1["commit"]
    config = inspect(reference, "--config")["config"]
    assert config["User"] == "10001:10001"  # numeric: runAsNonRoot can check it
    assert f"LOCKSERVE_BUNDLE_MD5={v1['md5']}" in config["Env"]
    assert image["image_bytes"] > 0


def podman_run(name: str, image_ref: str, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*PODMAN, *RUN, "--name", name, "-e", "HOST=127.0.0.1", "-e", f"PORT={port}"]
        + ["-e", "LOCKSERVE_GRPC_PORT=0", "-e", "WEB_CONCURRENCY=1", image_ref],
        stdout=open(log, "wb"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_container(name: str, proc: subprocess.Popen) -> int:
    subprocess.run([*PODMAN, "stop", "--time", "10", name], capture_output=True)
    try:
        return proc.wait(30)
    finally:
        subprocess.run([*PODMAN, "rm", "--force", name], capture_output=True)


def test_container_serves_the_pinned_model_from_the_archive(image, v1, tmp_path):
    port = free_port()
    name = f"lockserve-test-{port}"
    proc = podman_run(name, f"oci-archive:{image['archive']}", port, tmp_path / "c.log")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                if http("GET", f"{base}/health/ready", timeout=2)[0] == 200:
                    break
            time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "c.log").read_text()
        status, body = http("POST", f"{base}/predict", BODY)
        assert status == 200, (tmp_path / "c.log").read_text()
        assert body["model"]["md5"] == v1["md5"]
    finally:
        stop_container(name, proc)
    output = (tmp_path / "c.log").read_text()
    lines = json_lines(output)
    assert any(line.get("model_md5") == v1["md5"] for line in lines)
    assert len(lines) == len(output.strip().splitlines())  # every line JSON (onnxruntime's too)


def test_a_tampered_image_refuses_to_start(image, v1, tmp_path):
    changed = tmp_path / "model.zip"
    work = run(["buildah", *STORAGE, "from", image["image"]], cwd=ROOT).stdout.strip()
    tampered = f"localhost/lockserve-tampered:{v1['md5'][:12]}"
    try:
        mount = run(["buildah", *STORAGE, "mount", work], cwd=ROOT).stdout.strip()
        data = (Path(mount) / "opt/lockserve/bundle/model.zip").read_bytes()
        changed.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        run(["buildah", *STORAGE, "copy", work, str(changed), "/opt/lockserve/bundle/"], cwd=ROOT)
        run(["buildah", *STORAGE, "commit", "--quiet", work, tampered], cwd=ROOT)
    finally:
        subprocess.run(["buildah", *STORAGE, "rm", work], capture_output=True)
    port = free_port()
    proc = podman_run(f"lockserve-tampered-{port}", tampered, port, tmp_path / "t.log")
    try:
        code = proc.wait(120)
    finally:
        subprocess.run(["buildah", *STORAGE, "rmi", tampered], capture_output=True)
    output = (tmp_path / "t.log").read_text()
    assert code == 3, output
    fatal = [line for line in json_lines(output) if line["level"] == "CRITICAL"]
    assert len(fatal) == 1, output
    got = hashlib.md5(changed.read_bytes()).hexdigest()
    assert f"has md5 {got}" in fatal[0]["msg"] and f"pinned {v1['md5']}" in fatal[0]["msg"]
    assert "Listening at" not in output


def test_the_image_is_also_a_lambda_container_image(image, v1, tmp_path):
    """Lambda sets AWS_LAMBDA_RUNTIME_API in the container; nothing else changes."""
    with FakeRuntimeApi() as api:
        proc = subprocess.Popen(
            [*PODMAN, *RUN, "--name", f"lockserve-lambda-{os.getpid()}"]
            + ["-e", f"AWS_LAMBDA_RUNTIME_API={api.address}", image["image"]],
            stdout=open(tmp_path / "l.log", "wb"),  # noqa: SIM115 - the child holds it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            kind, answer = api.invoke(http_api_v2_event("POST", "/predict", BODY), timeout=120)
        finally:
            stop_container(f"lockserve-lambda-{os.getpid()}", proc)
    assert kind == "response" and answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["model"]["md5"] == v1["md5"]
