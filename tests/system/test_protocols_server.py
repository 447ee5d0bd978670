"""System: a real `make serve` (gunicorn, 2 workers, gRPC beside HTTP) answered by clients no
one here wrote — tritonclient (HTTP: JSON and binary tensors; gRPC), the kserve SDK (REST and
gRPC) and MLflow's scoring client — each in its own process in .venv-clients; the bandit's
pending rows survive SIGTERM and reload; a taken gRPC port refuses start-up."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.servers import (
    SERVER,
    Server,
    free_port,
    http,
    infer_request,
    json_lines,
    refused,
    running,
)

pytestmark = pytest.mark.system

CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
MAKE_SERVE = ["make", "--no-print-directory", "-s", "serve"]
ROWS = [
    {
        "island": "Biscoe",
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 217.0,
        "body_mass_g": 5200.0,
        "sex": "male",
    },
    {
        "island": "Dream",
        "bill_depth_mm": 18.0,
        "flipper_length_mm": 190.0,
        "body_mass_g": None,
        "sex": "female",
    },
    {
        "island": "Torgersen",
        "bill_depth_mm": 19.1,
        "flipper_length_mm": 184.0,
        "body_mass_g": 3900.0,
        "sex": "male",
    },
]
BAD_ISLAND = "instance 0, field 'island': Input should be 'Biscoe', 'Dream' or 'Torgersen'"


def speak(client: str, http_url: str, grpc_address: str, model: str) -> dict:
    done = subprocess.run(
        [
            str(CLIENTS_PYTHON),
            "tests/clients/speak.py",
            client,
            http_url,
            grpc_address,
            model,
            json.dumps(ROWS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def answered(model_repo_template, tmp_path_factory):
    """What each client got from one `make serve`, next to /predict's answer."""
    assert CLIENTS_PYTHON.exists(), "run `make clients` (make test does)"
    tmp = tmp_path_factory.mktemp("protocols")
    grpc_port = free_port()
    with running(
        MAKE_SERVE,
        ROOT,
        tmp / "log",
        LOCKSERVE_REPO=str(model_repo_template / "repo"),
        WEB_CONCURRENCY="2",
        LOCKSERVE_GRPC_PORT=str(grpc_port),
    ) as server:
        status, expected = http("POST", server.base + "/predict", {"instances": ROWS})
        assert status == 200
        grpc_address = f"127.0.0.1:{grpc_port}"
        name = expected["model"]["name"]
        got = {
            client: speak(client, server.base, grpc_address, name)
            for client in ("triton_http", "triton_grpc", "kserve_rest", "kserve_grpc", "mlflow")
        }
        logs = json_lines(server.output())
    yield got, expected, logs


def arrays(expected: dict) -> tuple[list[str], list[list[float]]]:
    import numpy as np

    labels = [p["label"] for p in expected["predictions"]]
    classes = list(expected["predictions"][0]["probabilities"])
    proba = [[p["probabilities"][c] for c in classes] for p in expected["predictions"]]
    return labels, np.array(proba, np.float32).tolist()


@pytest.mark.parametrize(
    ("client", "mode"),
    [
        ("triton_http", "json"),
        ("triton_http", "binary"),
        ("triton_http", "default_outputs"),
        ("triton_grpc", "binary"),
        ("kserve_rest", "json"),
        ("kserve_grpc", "binary"),
    ],
)
def test_oip_clients_get_the_labels_and_probabilities_predict_gives(answered, client, mode):
    got, expected, _ = answered
    labels, proba = arrays(expected)
    assert got[client][mode] == {"labels": labels, "probabilities": proba}


@pytest.mark.parametrize("client", ["triton_http", "triton_grpc", "kserve_rest", "kserve_grpc"])
def test_oip_clients_see_health_and_readiness(answered, client):
    got, _, _ = answered
    assert (got[client]["live"], got[client]["ready"], got[client]["model_ready"]) == (
        True,
        True,
        True,
    )


@pytest.mark.parametrize("client", ["triton_http", "triton_grpc"])
def test_metadata_and_the_version_that_answered(answered, client):
    got, expected, _ = answered
    md5 = expected["model"]["md5"]
    meta = got[client]["metadata"]
    assert meta["name"] == expected["model"]["name"] and meta["versions"] == [md5]
    assert [i["name"] for i in meta["inputs"]] == list(ROWS[0])
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "BYTES"),
        ("probabilities", "FP32"),
    ]
    assert got[client]["server"]["name"] == "lockserve"
    assert got[client]["model_version"] == md5


def test_grpc_answers_name_variant_md5_and_classes(answered):
    got, expected, _ = answered
    parameters = {k: v["string_param"] for k, v in got["triton_grpc"]["parameters"].items()}
    assert parameters == {
        "variant": "default",
        "md5": expected["model"]["md5"],
        "rev": "workspace",
        "classes": "Adelie,Chinstrap,Gentoo",
    }


@pytest.mark.parametrize(
    ("client", "status"),
    [
        ("triton_http", "422"),
        ("triton_grpc", "StatusCode.INVALID_ARGUMENT"),
        ("kserve_grpc", "INVALID_ARGUMENT"),
    ],
)
def test_bad_input_is_the_clients_own_error(answered, client, status):
    got, _, _ = answered
    assert got[client]["error"]["status"] == status
    assert got[client]["error"]["message"].startswith(BAD_ISLAND)


def test_kserve_rest_sees_a_422_with_the_oip_error_body(answered):
    got, _, _ = answered
    error = got["kserve_rest"]["error"]
    assert error["status"] == 422 and error["body"]["error"].startswith(BAD_ISLAND)


@pytest.mark.parametrize(
    ("client", "status"), [("triton_http", "404"), ("triton_grpc", "StatusCode.NOT_FOUND")]
)
def test_an_unknown_model_is_not_found(answered, client, status):
    got, expected, _ = answered
    assert got[client]["missing_model"] == {
        "status": status,
        "message": f"unknown model 'no-such-model'; this server serves "
        f"'{expected['model']['name']}'",
    }


@pytest.mark.parametrize(
    "form", ["client", "dataframe_split", "dataframe_records", "instances", "inputs", "csv"]
)
def test_mlflow_formats_answer_the_labels_predict_gives(answered, form):
    got, expected, _ = answered
    labels = arrays(expected)[0]
    result = got["mlflow"][form]
    assert (
        result == labels
        if form == "client"
        else result == {"status": 200, "body": {"predictions": labels}}
    )


def test_mlflow_errors_are_what_mlflow_clients_expect(answered):
    got, _, _ = answered
    assert got["mlflow"]["version"] == "0.1.0"
    error = got["mlflow"]["error"]
    assert error["status"] == 400 and error["body"]["error_code"] == "BAD_REQUEST"
    assert error["body"]["message"].startswith(BAD_ISLAND)


def test_grpc_calls_are_logged_with_request_id_latency_and_model(answered):
    got, expected, logs = answered
    infers = [
        line
        for line in logs
        if line["logger"] == "lockserve.access" and line["path"].endswith("/ModelInfer")
    ]
    ok = [line for line in infers if line["status"] == "OK"]
    assert len(ok) == 2  # tritonclient's and kserve's
    assert all(
        line["model_md5"] == expected["model"]["md5"]
        and line["batch_size"] == 3
        and line["latency_ms"] > 0
        and len(line["request_id"]) >= 1
        for line in ok
    )
    assert {line["status"] for line in infers} == {"OK", "INVALID_ARGUMENT"}
    started = [line for line in logs if line["logger"] == "lockserve.grpc"]
    assert len(started) == 2  # one gRPC server a worker, on the one port


# -- lifecycle: the bandit's pending rows, SIGTERM and reload

BANDIT = (
    "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"
    "bandit: {seed: 0, flush_ms: 60000}\n"  # a minute between flushes: only stop writes them
)


def bandit_server(model_repo, tmp_path, **env):
    serving = tmp_path / "serving.yaml"
    serving.write_text(BANDIT)
    return running(
        SERVER,
        ROOT,
        tmp_path / f"log-{time.monotonic_ns()}",
        LOCKSERVE_REPO=str(model_repo),
        LOCKSERVE_SERVING_FILE=str(serving),
        LOCKSERVE_STATE_DB=str(tmp_path / "state.sqlite"),
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
        WEB_CONCURRENCY="1",
        **env,
    )


def predict_with_id(base: str, request_id: str) -> int:
    import urllib.request

    request = urllib.request.Request(
        base + "/predict",
        data=json.dumps({"instances": ROWS[:1]}).encode(),
        headers={"content-type": "application/json", "x-request-id": request_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_feedback_for_the_last_request_before_sigterm_is_accepted_after_restart(
    model_repo, tmp_path
):
    with bandit_server(model_repo, tmp_path) as server:
        assert predict_with_id(server.base, "last-before-sigterm") == 200
        server.signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    with bandit_server(model_repo, tmp_path) as server:
        status, body = http(
            "POST",
            server.base + "/feedback",
            {"request_id": "last-before-sigterm", "label": "Gentoo"},
        )
    assert status == 200, body
    assert body["request_id"] == "last-before-sigterm" and body["variant"] in ("a", "b")


def test_feedback_for_a_request_before_a_reload_is_accepted_by_the_new_workers(
    model_repo, tmp_path
):
    with bandit_server(model_repo, tmp_path) as server:
        assert predict_with_id(server.base, "before-reload") == 200
        reloaded = subprocess.run(  # `make reload`: answers once every worker has swapped
            [sys.executable, "-m", "api.reload", "--pidfile", str(tmp_path / "server.pid")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr + server.output()
        swapped = [
            line for line in json_lines(server.output()) if "serves generation" in line["msg"]
        ]
        assert len(swapped) == 1, server.output()  # one worker: the app it served has stopped
        status, body = http(
            "POST", server.base + "/feedback", {"request_id": "before-reload", "reward": 1}
        )
    assert status == 200, body
    assert body["variant"] in ("a", "b")
    assert body == {"request_id": "before-reload", "variant": body["variant"], "reward": 1.0}


def test_a_taken_grpc_port_refuses_start_up(model_repo, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message, _ = refused(
            SERVER,  # make would turn the exit code 3 into its own 2
            ROOT,
            tmp_path / "log",
            LOCKSERVE_REPO=str(model_repo),
            LOCKSERVE_GRPC_PORT=str(port),
        )
    assert message == (
        f"refusing to start: gRPC port 127.0.0.1:{port} is in use "
        "(LOCKSERVE_GRPC_PORT; 0 turns gRPC off)"
    )


def test_the_proto_is_wire_compatible_with_the_one_the_kserve_sdk_ships():
    """Same package, method and message names, field numbers, types and labels wherever both
    declare them; the differences are exactly the known ones."""
    done = subprocess.run(
        [
            str(CLIENTS_PYTHON),
            "tests/clients/proto_fields.py",
            "api/proto/open_inference_grpc.proto",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shapes = json.loads(done.stdout)
    kserve, ours = shapes["kserve"], shapes["lockserve"]
    assert kserve["package"] == ours["package"] == "inference"
    theirs = kserve["services"]["GRPCInferenceService"]
    mine = ours["services"]["GRPCInferenceService"]
    assert {name: theirs[name] for name in mine} == mine  # all six calls, same types
    assert sorted(set(theirs) - set(mine)) == ["RepositoryModelLoad", "RepositoryModelUnload"]
    common = set(kserve["messages"]) & set(ours["messages"])
    assert set(ours["messages"]) <= set(kserve["messages"])
    for message in common:
        a, b = kserve["messages"][message], ours["messages"][message]
        assert {f: a[f] for f in a if f in b} == {f: b[f] for f in b if f in a}, message
    # the specification's InferParameter has two value kinds the kserve SDK's copy lacks
    only_ours = {m: sorted(set(ours["messages"][m]) - set(kserve["messages"][m])) for m in common}
    assert {m: f for m, f in only_ours.items() if f} == {
        "InferParameter": ["double_param", "uint64_param"]
    }


# -- gRPC across a reload and a shutdown

RETRY = json.dumps(  # the standard gRPC retry policy a client sets for UNAVAILABLE
    {
        "methodConfig": [
            {
                "name": [{"service": "inference.GRPCInferenceService"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def grpc_load(address: str, model: str, seconds: float, threads: int = 4) -> list[str]:
    """Status code names of every ModelInfer call several threads make for ``seconds``."""
    import threading

    import grpc

    from api.proto import open_inference_grpc_pb2_grpc as pb_grpc

    request = infer_request(model, ROWS[:1])
    codes: list[str] = []
    stop = time.monotonic() + seconds

    def work() -> None:
        options = [("grpc.service_config", RETRY), ("grpc.enable_retries", 1)]
        with grpc.insecure_channel(address, options=options) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while time.monotonic() < stop:
                try:
                    infer(request, timeout=10)
                    codes.append("OK")
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)
                    time.sleep(0.05)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return codes


def test_grpc_clients_that_retry_unavailable_lose_no_call_across_a_reload(model_repo, tmp_path):
    import threading
    from collections import Counter

    grpc_port = free_port()
    with running(
        SERVER,
        ROOT,
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        WEB_CONCURRENCY="2",
        LOCKSERVE_GRPC_PORT=str(grpc_port),
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
    ) as server:
        name = http("GET", server.base + "/model")[1]["name"]
        result: list[list[str]] = []
        load = threading.Thread(
            target=lambda: result.append(grpc_load(f"127.0.0.1:{grpc_port}", name, 8.0))
        )
        load.start()
        time.sleep(2.0)
        os.kill(int((tmp_path / "server.pid").read_text()), signal.SIGHUP)
        load.join()
        logs = json_lines(server.output())
    codes = Counter(result[0])
    assert set(codes) == {"OK"} and codes["OK"] > 100, codes
    assert sum("serves generation 2" in line["msg"] for line in logs) == 2  # both workers


def test_a_stopping_server_answers_grpc_calls_unavailable_never_cancelled(model_repo, tmp_path):
    import threading
    from collections import Counter

    grpc_port = free_port()
    server = Server(
        SERVER,
        ROOT,
        free_port(),
        tmp_path / "log",
        LOCKSERVE_REPO=str(model_repo),
        WEB_CONCURRENCY="2",
        LOCKSERVE_GRPC_PORT=str(grpc_port),
    )
    try:
        server.wait_ready()
        name = http("GET", server.base + "/model")[1]["name"]
        result: list[list[str]] = []
        load = threading.Thread(
            target=lambda: result.append(grpc_load(f"127.0.0.1:{grpc_port}", name, 5.0, 6))
        )
        load.start()
        time.sleep(2.0)
        server.signal(signal.SIGTERM)
        load.join()
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    codes = Counter(result[0])
    assert codes["OK"] > 100 and set(codes) <= {"OK", "UNAVAILABLE"}, codes
