"""System: the real server (granian via api/serve.py; gunicorn + uvicorn beside it; honcho +
Procfile) on free ports."""

import hashlib
import json
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.servers import (
    GUNICORN,
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

PENGUIN = {
    "island": "Dream",
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 195.0,
    "body_mass_g": 3700.0,
    "sex": "female",
}


@pytest.mark.parametrize("command", [SERVER, GUNICORN], ids=["granian", "gunicorn"])
def test_the_server_serves_the_pinned_model(model_repo, artifacts, tmp_path, command):
    """The production server (granian, api/serve.py), and gunicorn + uvicorn beside it."""
    with running(
        command, ROOT, tmp_path / "log", LOCKSERVE_REPO=str(model_repo), WEB_CONCURRENCY="2"
    ) as server:
        status, body = http("POST", server.base + "/predict", {"instances": [PENGUIN] * 3})
        assert status == 200 and len(body["predictions"]) == 3
        assert body["model"]["md5"] == hashlib.md5(artifacts["v2"]).hexdigest()
        assert http("GET", server.base + "/model")[1]["rev"] == "workspace"
        status, error = http("POST", server.base + "/predict", {"instances": [{"x": 1}]})
        assert status == 422 and error["error"]["code"] == "invalid_request"
        deadline = time.monotonic() + 20  # the second worker may still be starting
        while server.output().count('"ready_ms"') < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        logs = json_lines(server.output())
    steps = {line["msg"].split(" ")[0] for line in logs if line["logger"] == "lockserve.resolver"}
    assert {"dvc.lock", "resolved"} <= steps
    access = [line for line in logs if line["logger"] == "lockserve.access"]
    predict = next(a for a in access if a["path"] == "/predict" and a["status"] == 200)
    assert predict["batch_size"] == 3 and predict["model_md5"] == body["model"]["md5"]
    assert len(predict["request_id"]) == 32 and predict["latency_ms"] > 0
    ready = [line for line in logs if "ready_ms" in line and line["msg"].startswith("worker ")]
    assert len(ready) == 2


def test_tampered_artifact_refuses_to_start(model_repo, artifacts, tmp_path):
    digest = hashlib.md5(artifacts["v2"]).hexdigest()
    (model_repo / "models/model.zip").write_bytes(b"tampered")
    (model_repo / f".dvc/cache/files/md5/{digest[:2]}/{digest[2:]}").unlink()
    for obj in (model_repo.parent / "remote").rglob(digest[2:]):
        obj.unlink()
    port = free_port()
    server = Server(SERVER, ROOT, port, tmp_path / "log", LOCKSERVE_REPO=str(model_repo))
    code = server.proc.wait(60)
    output = server.output()
    server.stop()
    assert code == 3
    fatal = [line for line in json_lines(output) if line["level"] == "CRITICAL"]
    assert len(fatal) == 1
    assert fatal[0]["msg"].startswith("refusing to start: models/model.zip md5 " + digest)
    assert f"workspace: md5 {hashlib.md5(b'tampered').hexdigest()}" in fatal[0]["msg"]
    assert "Listening at" not in output
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_unknown_rev_refuses_to_start(model_repo, tmp_path):
    message, _ = refused(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        LOCKSERVE_REV="no-such-tag",
    )
    assert message.startswith("refusing to start: unknown git revision 'no-such-tag'")


def test_a_port_in_use_refuses_to_start_rather_than_share_it(model_repo, tmp_path):
    """Another server on the port: exit 3 and one line, never half the other's traffic."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as granian's own would
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(SERVER, ROOT, port, tmp_path / "log", LOCKSERVE_REPO=str(model_repo))
        code = server.proc.wait(120)
        output = server.output()
        server.stop()
    assert code == 3, output
    fatal = [line["msg"] for line in json_lines(output) if line["level"] == "CRITICAL"]
    assert fatal == [
        f"refusing to start: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert "Listening at" not in output


def test_a_second_server_on_the_same_pidfile_refuses_in_one_line(model_repo, tmp_path):
    """`make serve` twice: the second names the first and the settings for a second one, and
    leaves nothing behind (no traceback, no temporary folder)."""
    pidfile = str(tmp_path / "server.pid")
    with running(
        SERVER,
        ROOT,
        tmp_path / "first.log",
        LOCKSERVE_REPO=str(model_repo),
        LOCKSERVE_PIDFILE=pidfile,
    ):
        first = int(Path(pidfile).read_text())
        message, output = refused(SERVER, ROOT, tmp_path / "second.log", LOCKSERVE_PIDFILE=pidfile)
    assert message == (
        f"refusing to start: the server with pid {first} runs from pidfile {pidfile} "
        "(LOCKSERVE_PIDFILE, PORT and LOCKSERVE_GRPC_PORT for a second one)"
    )
    assert "Traceback" not in output


def test_sigterm_lets_the_in_flight_request_finish(model_repo, tmp_path):
    with running(
        SERVER, ROOT, tmp_path / "log", LOCKSERVE_REPO=str(model_repo), WEB_CONCURRENCY="1"
    ) as server:
        body = json.dumps({"instances": [PENGUIN]}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        head = (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:10])  # the request is now in flight
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None, "the server quit with a request in flight"
        sock.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"predictions"' in reply
        assert server.proc.wait(30) == 0


def test_procfile_runs_under_honcho(model_repo, tmp_path):
    honcho = str(Path(sys.executable).parent / "honcho")
    port, grpc_port = free_port(), free_port()
    server = Server(
        [honcho, "-f", "Procfile", "start", "-p", str(port)],
        ROOT,
        port,
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        WEB_CONCURRENCY="1",
        LOCKSERVE_GRPC_PORT=str(grpc_port),
    )
    try:
        server.wait_ready()
        status, body = http("POST", server.base + "/predict", {"instances": [PENGUIN]})
        assert status == 200 and body["predictions"][0]["label"] in {"Adelie", "Chinstrap"}
        live, md5, label = grpc_model_infer(
            f"127.0.0.1:{grpc_port}", body["model"]["name"], PENGUIN
        )
        assert (live, md5, label) == (True, body["model"]["md5"], body["predictions"][0]["label"])
    finally:
        server.stop()
    assert f"Listening at: http://127.0.0.1:{port}" in server.output()


def poisoned(data: bytes) -> bytes:
    """The artifact without its graph (so sklearn answers, batched) and with a step that fails on
    one valid value (tests/poison.py)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from contract.artifact import pack, read
    from src.stage import canonical_pickle
    from tests.poison import refuse_sentinel

    parts = read(data)
    steps = parts.sklearn_pipeline().steps
    pipeline = Pipeline([*steps[:-1], ("poison", FunctionTransformer(refuse_sentinel)), steps[-1]])
    return pack(canonical_pickle(pipeline), parts.schema, parts.metadata, parts.preprocess, None)


def test_a_failing_request_never_fails_its_batch_mates(artifacts, tmp_path):
    """sklearn with adaptive batching; every fourth request passes validation but makes the
    model raise. They share batches with good ones (the failed batches are re-run one by one),
    and only they fail."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import pinned_repo
    from tests.poison import SENTINEL

    repo = pinned_repo(tmp_path / "poisoned", {"p1": poisoned(artifacts["v2"])})
    jobs = [
        ("bad", {"instances": [{**PENGUIN, "body_mass_g": SENTINEL}]})
        if i % 4 == 3
        else ("good", {"instances": [PENGUIN]})
        for i in range(240)
    ]
    with running(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(repo),
        LOCKSERVE_MAX_LATENCY_MS="20",
        WEB_CONCURRENCY="2",
    ) as server:
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(
                    lambda job: (job[0], *http("POST", server.base + "/predict", job[1])), jobs
                )
            )
        described = http("GET", server.base + "/model")[1]
        logs = json_lines(server.output())
    good = [(status, body) for kind, status, body in results if kind == "good"]
    bad = [(status, body) for kind, status, body in results if kind == "bad"]
    assert len(good) == 180 and all(status == 200 for status, _ in good)
    assert all(body["predictions"][0]["label"] for _, body in good)
    assert len(bad) == 60 and all(status == 500 for status, _ in bad)
    assert all(body["error"]["code"] == "internal_error" for _, body in bad)
    assert described["backend"] == "sklearn" and described["runner"]["runner"] == "batch"
    reruns = [
        int(line["msg"].split(" ")[-5])
        for line in logs
        if line["msg"].startswith("batch of ") and "re-running" in line["msg"]
    ]
    assert reruns and max(reruns) > 1  # a failing request had batch-mates, and they were spared


def _urllib_post(url: str, body: bytes, **headers: str) -> tuple[int, dict]:
    """POST as Python's urllib does: the whole body written before the answer is read."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_an_oversize_body_gets_its_413_even_from_a_client_that_writes_it_all_first(
    model_repo, tmp_path
):
    """A 15 MB body (137,000 instances) to a 1 MB limit: urllib writes every byte before it
    reads; the server reads and discards the rest after answering, so the 413 arrives instead
    of a connection reset, with or without a declared length, and the server keeps serving."""
    instance = json.dumps(PENGUIN).encode()
    body = b'{"instances": [' + b", ".join([instance] * 137_000) + b"]}"
    assert len(body) > 15_000_000
    with running(
        SERVER, ROOT, tmp_path / "log", LOCKSERVE_REPO=str(model_repo), WEB_CONCURRENCY="1"
    ) as server:
        for attempt in range(3):
            status, error = _urllib_post(server.base + "/predict", body)
            assert status == 413, attempt
            assert error["error"]["message"] == (
                f"request body of {len(body)} bytes is over the 1048576-byte limit"
            )
        chunks = iter([body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)])
        status, error = _urllib_post(
            server.base + "/predict", chunks, **{"transfer-encoding": "chunked"}
        )
        assert (status, error["error"]["message"]) == (
            413,
            "request body is over the 1048576-byte limit",
        )
        status, answer = http("POST", server.base + "/predict", {"instances": [PENGUIN]})
        assert status == 200 and len(answer["predictions"]) == 1
