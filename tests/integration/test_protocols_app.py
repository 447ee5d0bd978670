"""Integration: every protocol through the app, on a real artifact — the Open Inference
Protocol over REST (JSON and binary tensors) and gRPC, MLflow's scoring protocol — answers
what /predict answers for the same rows, names the model that answered, and refuses bad input
with its own protocol's error, never a 5xx."""

import hashlib
import struct

import grpc
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.proto import open_inference_grpc_pb2 as pb
from api.proto import open_inference_grpc_pb2_grpc as pb_grpc
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import PENGUIN, served_model
from tests.servers import columns, free_port, infer_request, raw_bytes

ROWS = [
    PENGUIN,
    {**PENGUIN, "island": "Dream", "body_mass_g": 3300.0, "flipper_length_mm": 190.0},
    {**PENGUIN, "island": "Torgersen", "bill_depth_mm": 18.5, "sex": None},
    {**PENGUIN, "body_mass_g": None, "flipper_length_mm": 200.0},
]
NAME = "penguin-classifier"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def served(artifacts):
    """The app with gRPC on a free port, a channel to it, and /predict's answer for ROWS."""
    port = free_port()
    settings = Settings(grpc_port=port, grpc_host="127.0.0.1")
    store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
    with TestClient(create_app(settings, store)) as client:
        expected = client.post("/predict", json={"instances": ROWS}).json()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield client, pb_grpc.GRPCInferenceServiceStub(channel), expected


def json_inputs(rows: list[dict]) -> list[dict]:
    """One tensor per feature, as KServe's pandas codec sends a table."""
    out = []
    for name, values in columns(rows).items():
        text = any(isinstance(v, str) for v in values)
        datatype = "BYTES" if text else "FP64"
        out.append({"name": name, "datatype": datatype, "shape": [len(values)], "data": values})
    return out


def binary_request(rows: list[dict], outputs: list[dict] | None = None) -> tuple[bytes, dict]:
    """Triton's binary tensor extension: a JSON header, then each input's raw bytes."""
    inputs, blobs = [], []
    for name, values in columns(rows).items():
        if any(isinstance(v, str) for v in values):
            assert None not in values  # BYTES has no missing value
        blob = raw_bytes(values)
        datatype = "BYTES" if isinstance(values[0], str) else "FP32"
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": [len(values)],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header: dict = {"inputs": inputs}
    if outputs is None:
        header["parameters"] = {"binary_data_output": True}
    else:
        header["outputs"] = outputs
    text = orjson.dumps(header)
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def binary_outputs(body: bytes, header_length: int) -> tuple[dict, dict]:
    header = orjson.loads(body[:header_length])
    at, out = header_length, {}
    for output in header["outputs"]:
        if "data" in output:  # this one came as JSON
            out[output["name"]] = output["data"]
            continue
        size = output["parameters"]["binary_data_size"]
        blob = body[at : at + size]
        at += size
        if output["datatype"] == "BYTES":
            items, i = [], 0
            while i < len(blob):
                (n,) = struct.unpack_from("<I", blob, i)
                items.append(blob[i + 4 : i + 4 + n].decode())
                i += 4 + n
            out[output["name"]] = items
        else:
            dtype = {"FP32": "<f4", "FP64": "<f8"}[output["datatype"]]
            out[output["name"]] = np.frombuffer(blob, dtype).reshape(output["shape"])
    assert at == len(body)
    return header, out


def expected_arrays(expected: dict) -> tuple[list[str], np.ndarray]:
    labels = [p["label"] for p in expected["predictions"]]
    classes = list(expected["predictions"][0]["probabilities"])
    proba = [[p["probabilities"][c] for c in classes] for p in expected["predictions"]]
    return labels, np.array(proba, np.float32)


# -- Open Inference Protocol over REST


def test_oip_server_and_model_metadata_come_from_the_artifact(served, artifacts):
    client, _, _ = served
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    assert client.get("/v2").json() == {
        "name": "lockserve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "model_repository_versions"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["versions"] == [md5] and meta["platform"] == "lockserve"
    assert meta["inputs"] == [
        {"name": "island", "datatype": "BYTES", "shape": [-1]},
        {"name": "bill_depth_mm", "datatype": "FP64", "shape": [-1]},
        {"name": "flipper_length_mm", "datatype": "FP64", "shape": [-1]},
        {"name": "body_mass_g", "datatype": "FP64", "shape": [-1]},
        {"name": "sex", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert meta["parameters"] == {
        "task": "classification",
        "target": "species",
        "rev": "v1",
        "strategy": "single",
        "classes": ["Adelie", "Chinstrap", "Gentoo"],
    }
    assert client.get(f"/v2/models/{NAME}/versions/{md5}").json() == meta
    assert client.get(f"/v2/models/{NAME}/versions/{md5}/ready").json()["ready"] is True


def test_oip_json_infer_equals_predict_and_names_the_model(served, artifacts):
    client, _, expected = served
    r = client.post(INFER, json={"id": "req-oip-1", "inputs": json_inputs(ROWS)})
    assert r.status_code == 200, r.text
    body = r.json()
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    assert (body["model_name"], body["model_version"], body["id"]) == (NAME, md5, "req-oip-1")
    assert body["parameters"] == {"variant": "default", "md5": md5, "rev": "v1"}
    assert r.headers["x-request-id"] == "req-oip-1"
    label, proba = body["outputs"]
    labels, probabilities = expected_arrays(expected)
    assert label == {"name": "label", "datatype": "BYTES", "shape": [4], "data": labels}
    assert (proba["datatype"], proba["shape"]) == ("FP32", [4, 3])
    np.testing.assert_array_equal(np.array(proba["data"], np.float32).reshape(4, 3), probabilities)


def test_oip_binary_tensors_in_and_out_equal_predict(served):
    client, _, expected = served
    rows = [r for r in ROWS if r["sex"] is not None]  # BYTES carries no null
    want = client.post("/predict", json={"instances": rows}).json()
    body, headers = binary_request(rows)
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    header, out = binary_outputs(r.content, int(r.headers["inference-header-content-length"]))
    labels, probabilities = expected_arrays(want)
    assert out["label"] == labels
    np.testing.assert_array_equal(out["probabilities"], probabilities)


def test_oip_requested_outputs_only_and_binary_only_where_asked(served):
    client, _, expected = served
    outputs = [{"name": "label", "parameters": {"binary_data": False}}]
    r = client.post(INFER, json={"inputs": json_inputs(ROWS), "outputs": outputs})
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    assert r.json()["outputs"][0]["data"] == expected_arrays(expected)[0]
    rows = ROWS[:2]
    body, headers = binary_request(
        rows, [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]
    )
    r = client.post(INFER, content=body, headers=headers)
    header, out = binary_outputs(r.content, int(r.headers["inference-header-content-length"]))
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    assert "data" not in header["outputs"][0] and "parameters" not in header["outputs"][1]
    labels, probabilities = expected_arrays(expected)
    assert out["label"] == labels[:2]
    np.testing.assert_array_equal(out["probabilities"], probabilities[:2])


def test_a_nan_in_a_number_tensor_is_a_missing_value(served):
    client, _, expected = served
    inputs = json_inputs(ROWS)
    mass = next(t for t in inputs if t["name"] == "body_mass_g")
    assert mass["data"][3] is None  # JSON null: missing
    r = client.post(INFER, json={"inputs": inputs})
    assert r.json()["outputs"][0]["data"] == expected_arrays(expected)[0]
    # the same row with NaN in a binary FP32 tensor answers the same
    rows = [{**ROWS[3]}]
    body, headers = binary_request(rows)
    r = client.post(INFER, content=body, headers=headers)
    _, out = binary_outputs(r.content, int(r.headers["inference-header-content-length"]))
    assert out["label"] == [expected["predictions"][3]["label"]]


def test_a_version_addresses_one_variant_and_the_strategy_picks_otherwise(artifacts):
    store = ModelStore(
        {
            "stable": served_model("stable", artifacts["v1"], "v1"),
            "candidate": served_model("candidate", artifacts["v2"], "v2"),
        }
    )
    canary = parse(
        "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 100}\n"
        "  candidate: {rev: v2, weight: 0}\n"
    )
    v2 = hashlib.md5(artifacts["v2"]).hexdigest()
    port = free_port()
    settings = Settings(grpc_port=port, grpc_host="127.0.0.1")
    with (
        TestClient(create_app(settings, store, build(canary))) as client,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        chosen = client.post(INFER, json={"inputs": json_inputs(ROWS)}).json()
        pinned = client.post(
            f"/v2/models/{NAME}/versions/{v2}/infer", json={"inputs": json_inputs(ROWS)}
        ).json()
        meta = client.get(f"/v2/models/{NAME}").json()
        request = grpc_request([r for r in ROWS if r["sex"] is not None], raw=False)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        by_grpc = stub.ModelInfer(request).parameters["variant"].string_param
        request.model_version = v2
        pinned_grpc = stub.ModelInfer(request).parameters["variant"].string_param
    assert chosen["parameters"]["variant"] == "stable"
    assert (by_grpc, pinned_grpc) == ("stable", "candidate")
    assert (pinned["parameters"]["variant"], pinned["model_version"]) == ("candidate", v2)
    assert meta["versions"][1] == v2 and len(meta["versions"]) == 2


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/v2/models/other/infer",
            {"inputs": []},
            404,
            "unknown model 'other'; this server serves 'penguin-classifier'",
        ),
        (
            f"/v2/models/{NAME}/versions/abc/infer",
            None,
            404,
            "model 'penguin-classifier' has no version 'abc'; served: ",
        ),
        (
            INFER,
            {"inputs": []},
            422,
            "inputs: List should have at least 1 item after validation, not 0",
        ),
        (
            INFER,
            {"inputs": [{"name": "island"}]},
            422,
            "inputs[0].datatype: Field required; inputs[0].shape: Field required",
        ),
        (
            INFER,
            "drop:island",
            422,
            "inputs: missing input 'island'; the model takes one input "
            "per feature: ['island', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g', 'sex']",
        ),
        (
            INFER,
            "add:beak",
            422,
            "inputs: unknown input 'beak'; the model takes one input per "
            "feature: ['island', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g', 'sex']",
        ),
        (
            INFER,
            "shape:island",
            422,
            "input 'island': shape [4, 2] is not [n] or [n, 1] (one column per input)",
        ),
        (INFER, "count:island", 422, "input 'island': shape [5] does not match its 4 elements"),
        (INFER, "type:island", 422, "input 'island': datatype 'FP8' is not supported"),
        (
            INFER,
            "value:island",
            422,
            "instance 0, field 'island': Input should be 'Biscoe', 'Dream' or 'Torgersen'",
        ),
        (
            INFER,
            "value:body_mass_g",
            422,
            "input 'body_mass_g': element 0 ('heavy') is not a number, as FP64 is",
        ),
    ],
)
def test_oip_bad_requests_get_their_status_and_an_error_string(served, path, body, status, message):
    client, _, _ = served
    inputs = json_inputs(ROWS)
    if body is None:
        body = {"inputs": inputs}
    elif isinstance(body, str):
        action, name = body.split(":")
        tensor = next((t for t in inputs if t["name"] == name), None)
        if action == "drop":
            inputs.remove(tensor)
        elif action == "add":
            inputs.append({"name": name, "datatype": "FP64", "shape": [4], "data": [1.0] * 4})
        elif action == "shape":
            tensor["shape"] = [4, 2]
        elif action == "count":
            tensor["shape"] = [5]
        elif action == "type":
            tensor["datatype"] = "FP8"
        elif action == "value":
            tensor["data"][0] = "Atlantis" if name == "island" else "heavy"
        body = {"inputs": inputs}
    r = client.post(path, json=body)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert list(r.json()) == ["error"] and r.json()["error"].startswith(message)


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{nope", {}, 400, "request body is not valid JSON: "),
        (b"[1]", {}, 422, "request body must be a JSON object"),
        (
            b'{"inputs": []}',
            {"Inference-Header-Content-Length": "999"},
            400,
            "Inference-Header-Content-Length '999' is not a length within the 14-byte body",
        ),
        (
            b'{"inputs": [{"name": "island", "datatype": "BYTES", "shape": [1], '
            b'"parameters": {"binary_data_size": 50}}]}xx',
            "auto",
            422,
            "input 'island': binary_data_size 50 runs past the body",
        ),
        (
            b'{"inputs": [{"name": "island", "datatype": "BYTES", "shape": [1], '
            b'"parameters": {"binary_data_size": 2}}]}xx',
            "auto",
            422,
            "input 'island': BYTES data ends inside an element's length",
        ),
        (
            b'{"inputs": [{"name": "body_mass_g", "datatype": "FP32", "shape": [1], '
            b'"parameters": {"binary_data_size": 3}}]}xyz',
            "auto",
            422,
            "input 'body_mass_g': 3 bytes is not a whole number of FP32 elements",
        ),
    ],
)
def test_oip_malformed_bodies_are_refused_naming_the_problem(
    served, body, headers, status, message
):
    client, _, _ = served
    if headers == "auto":
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"].startswith(message), r.json()


# -- the same over gRPC


def grpc_request(rows: list[dict], raw: bool) -> pb.ModelInferRequest:
    request = infer_request(NAME, rows, raw)
    request.id = "req-grpc-1"
    return request


def decode(response: pb.ModelInferResponse) -> dict:
    out = {}
    for output, blob in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            items, i = [], 0
            while i < len(blob):
                (n,) = struct.unpack_from("<I", blob, i)
                items.append(blob[i + 4 : i + 4 + n].decode())
                i += 4 + n
            out[output.name] = items
        else:
            out[output.name] = np.frombuffer(blob, "<f4").reshape(list(output.shape))
    return out


@pytest.mark.parametrize("raw", [False, True], ids=["typed-contents", "raw-contents"])
def test_grpc_infer_equals_predict_and_names_the_model(served, artifacts, raw):
    client, stub, _ = served
    rows = [r for r in ROWS if r["sex"] is not None]
    expected = client.post("/predict", json={"instances": rows}).json()
    response = stub.ModelInfer(grpc_request(rows, raw))
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    assert (response.model_name, response.model_version, response.id) == (NAME, md5, "req-grpc-1")
    assert response.parameters["md5"].string_param == md5
    assert response.parameters["variant"].string_param == "default"
    assert response.parameters["classes"].string_param == "Adelie,Chinstrap,Gentoo"
    out = decode(response)
    labels, probabilities = expected_arrays(expected)
    assert out["label"] == labels
    np.testing.assert_array_equal(out["probabilities"], probabilities)


def test_grpc_health_and_metadata_answer(served, artifacts):
    _, stub, _ = served
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name=NAME)).ready is True
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    assert stub.ModelReady(pb.ModelReadyRequest(name=NAME, version=md5)).ready is True
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert (meta.name, meta.version, list(meta.extensions)) == (
        "lockserve",
        "0.1.0",
        ["binary_tensor_data", "model_repository_versions"],
    )
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME, version=md5))
    assert (model.name, model.platform, list(model.versions)) == (NAME, "lockserve", [md5])
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]
    assert [t.name for t in model.inputs][0] == "island"


@pytest.mark.parametrize("call", ["ModelReady", "ModelMetadata"])
def test_grpc_model_calls_refuse_an_unknown_version(served, call):
    _, stub, _ = served
    request = getattr(pb, f"{call}Request")(name=NAME, version="md5-nope")
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, call)(request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details().startswith("model 'penguin-classifier' has no version 'md5-nope'")


def test_grpc_infer_logs_one_access_line_with_the_model(served, artifacts, caplog):
    import logging

    _, stub, _ = served
    request = grpc_request([r for r in ROWS if r["sex"] is not None], raw=True)
    request.id = "req-logged"
    with caplog.at_level(logging.INFO, logger="lockserve.access"):
        stub.ModelInfer(request)
    (line,) = [
        r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "req-logged"
    ]
    assert line.getMessage() == "GRPC ModelInfer OK"
    assert {
        k: line.fields[k] for k in ("path", "status", "batch_size", "variant", "model_md5")
    } == {
        "path": "grpc:inference.GRPCInferenceService/ModelInfer",
        "status": "OK",
        "batch_size": 3,
        "variant": "default",
        "model_md5": hashlib.md5(artifacts["v1"]).hexdigest(),
    }


def test_grpc_standard_health_service_says_serving(served):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    client, _, _ = served
    port = client.app.services[0].address.rsplit(":", 1)[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for service in ("", "inference.GRPCInferenceService"):
            assert check(health_pb2.HealthCheckRequest(service=service)).status == 1


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            "name",
            grpc.StatusCode.NOT_FOUND,
            "unknown model 'other'; this server serves 'penguin-classifier'",
        ),
        ("version", grpc.StatusCode.NOT_FOUND, "model 'penguin-classifier' has no version 'v9'"),
        ("drop", grpc.StatusCode.INVALID_ARGUMENT, "inputs: missing input 'sex'"),
        (
            "value",
            grpc.StatusCode.INVALID_ARGUMENT,
            "instance 0, field 'island': Input should be 'Biscoe', 'Dream' or 'Torgersen'",
        ),
        (
            "raw-count",
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents has 4 entries for 5 inputs",
        ),
        (
            "fp16",
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'body_mass_g': datatype 'FP16' is not supported (FP16 only as "
            "raw_input_contents)",
        ),
        (
            "raw-short",
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'island': BYTES data ends inside an element's length",
        ),
        (
            "bf16",
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'body_mass_g': datatype 'BF16' is not supported",
        ),
        (
            "output",
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs: unknown output 'value'; the model gives ['label', 'probabilities']",
        ),
    ],
)
def test_grpc_bad_requests_get_their_status_code(served, change, code, message):
    _, stub, _ = served
    rows = [r for r in ROWS if r["sex"] is not None]
    request = grpc_request(rows, raw=change in ("raw-count", "raw-short"))
    if change == "name":
        request.model_name = "other"
    elif change == "version":
        request.model_version = "v9"
    elif change == "drop":
        del request.inputs[-1]
    elif change == "value":
        request.inputs[0].contents.bytes_contents[0] = b"Atlantis"
    elif change == "raw-count":
        del request.raw_input_contents[-1]
    elif change == "fp16":
        request.inputs[3].datatype = "FP16"
    elif change == "output":
        request.outputs.add(name="value")
    elif change == "raw-short":
        request.raw_input_contents[0] = b"\x01\x00"
    elif change == "bf16":
        request.inputs[3].datatype = "BF16"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == code
    assert err.value.details().startswith(message)


# -- MLflow's scoring protocol


def mlflow_bodies(rows: list[dict]) -> dict[str, tuple[bytes, str]]:
    names = list(rows[0])
    as_json = {
        "dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in rows]},
        "dataframe_records": rows,
        "instances": rows,
        "inputs": columns(rows),
    }
    bodies = {k: (orjson.dumps({k: v}), "application/json") for k, v in as_json.items()}
    lines = [",".join(names)] + [
        ",".join("" if r[n] is None else str(r[n]) for n in names) for r in rows
    ]
    bodies["csv"] = ("\n".join(lines).encode() + b"\n", "text/csv")
    return bodies


@pytest.mark.parametrize(
    "form", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"]
)
def test_mlflow_formats_answer_the_labels_predict_answers(served, artifacts, form):
    client, _, expected = served
    body, content_type = mlflow_bodies(ROWS)[form]
    r = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected_arrays(expected)[0]}
    assert r.headers["x-model-md5"] == hashlib.md5(artifacts["v1"]).hexdigest()
    assert r.headers["x-model-variant"] == "default"


def test_mlflow_ping_and_version(served):
    client, _, _ = served
    assert (client.get("/ping").status_code, client.get("/ping").text) == (200, "\n")
    assert client.get("/health").status_code == 200
    assert client.get("/version").text == "0.1.0"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            b'{"instances": [], "inputs": []}',
            "application/json",
            "The input must be a JSON dictionary with exactly one of the input fields",
        ),
        (
            b'{"data": []}',
            "application/json",
            "The input must be a JSON dictionary with exactly one of the input fields",
        ),
        (b"[1, 2]", "application/json", "The input must be a JSON dictionary"),
        (b"{bad", "application/json", "request body is not valid JSON"),
        (
            b'{"dataframe_split": {"columns": ["island"], "data": [["Biscoe", 1]]}}',
            "application/json",
            "dataframe_split: row 0 has 2 values, not 1",
        ),
        (
            b'{"dataframe_records": [{"island": "Atlantis"}]}',
            "application/json",
            "instance 0, field 'island': Input should be 'Biscoe', 'Dream' or 'Torgersen'",
        ),
        (
            b'{"inputs": {"island": ["Biscoe"], "sex": []}}',
            "application/json",
            "inputs: as columns, every value must be a list of the same length",
        ),
        (b'{"instances": []}', "application/json", "the input has no rows"),
        (b"island,sex\nBiscoe\n", "text/csv", "CSV row 1 has 1 values, not 2"),
        (b"", "text/csv", "CSV body has no header row"),
        (
            b"island,bill_depth_mm,flipper_length_mm,body_mass_g,sex\nBiscoe,deep,200,4000,male\n",
            "text/csv",
            "instance 0, field 'bill_depth_mm': Input should be a valid number",
        ),
    ],
)
def test_mlflow_bad_input_is_a_400_bad_request(served, body, content_type, message):
    client, _, _ = served
    r = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert list(r.json()) == ["error_code", "message"]
    assert r.json()["error_code"] == "BAD_REQUEST" and r.json()["message"].startswith(message)


@pytest.mark.parametrize(
    "content_type", ["application/xml", "text/csv; charset=latin-1", "application/octet-stream"]
)
def test_mlflow_other_content_types_are_415_in_plain_text(served, content_type):
    client, _, _ = served
    r = client.post("/invocations", content=b"x", headers={"content-type": content_type})
    assert r.status_code == 415 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("This predictor only supports the following content types")


def test_every_protocol_answers_a_regressor_with_its_values(regression_artifacts):
    from tests.integration.test_regression_app import instances

    data = regression_artifacts["v1"]
    rows = instances(data, 3)
    store = ModelStore({"default": served_model("default", data, "v1")})
    with TestClient(create_app(Settings(), store)) as client:
        values = [
            p["value"]
            for p in client.post("/predict", json={"instances": rows}).json()["predictions"]
        ]
        name = client.get("/model").json()["name"]
        meta = client.get(f"/v2/models/{name}").json()
        oip = client.post(f"/v2/models/{name}/infer", json={"inputs": json_inputs(rows)}).json()
        mlflow = client.post("/invocations", json={"dataframe_records": rows}).json()
    assert meta["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    assert "classes" not in meta["parameters"]
    assert oip["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [3], "data": values}]
    assert mlflow == {"predictions": values}


# -- strategies hold on every protocol


def two_variants(artifacts) -> ModelStore:
    return ModelStore(
        {
            "stable": served_model("stable", artifacts["v1"], "v1"),
            "candidate": served_model("candidate", artifacts["v2"], "v2"),
        }
    )


def test_canary_keeps_a_routing_key_on_one_variant_whatever_the_protocol(artifacts):
    port = free_port()
    canary = parse(
        "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 50}\n"
        "  candidate: {rev: v2, weight: 50}\n"
    )
    settings = Settings(grpc_port=port, grpc_host="127.0.0.1")
    seen: dict[str, set] = {}
    with (
        TestClient(create_app(settings, two_variants(artifacts), build(canary))) as client,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for i in range(16):
            key = {"x-routing-key": f"user-{i}"}
            rest = client.post("/predict", json={"instances": ROWS[:1]}, headers=key)
            oip = client.post(INFER, json={"inputs": json_inputs(ROWS[:1])}, headers=key)
            mlflow = client.post("/invocations", json={"instances": ROWS[:1]}, headers=key)
            response = stub.ModelInfer(
                grpc_request(ROWS[:1], raw=False), metadata=[("x-routing-key", f"user-{i}")]
            )
            seen[f"user-{i}"] = {
                rest.json()["model"]["variant"],
                oip.json()["parameters"]["variant"],
                mlflow.headers["x-model-variant"],
                response.parameters["variant"].string_param,
            }
    assert all(len(variants) == 1 for variants in seen.values()), seen
    assert set.union(*seen.values()) == {"stable", "candidate"}  # both variants answer


def test_a_shadow_scores_requests_from_every_protocol(artifacts, caplog):
    import logging
    import time

    shadow = parse(
        "strategy: shadow\nvariants:\n  stable: {rev: v1, role: primary}\n"
        "  candidate: {rev: v2, role: shadow}\n"
    )
    with (
        caplog.at_level(logging.INFO, logger="lockserve.shadow"),
        TestClient(create_app(Settings(), two_variants(artifacts), build(shadow))) as client,
    ):
        oip = client.post(INFER, json={"id": "oip-1", "inputs": json_inputs(ROWS[:2])})
        mlflow = client.post(
            "/invocations", json={"instances": ROWS[:2]}, headers={"x-request-id": "mlflow-1"}
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            scored = {
                r.fields["request_id"] for r in caplog.records if r.name == "lockserve.shadow"
            }
            if scored >= {"oip-1", "mlflow-1"}:
                break
            time.sleep(0.02)
    assert oip.json()["parameters"]["variant"] == "stable"
    assert mlflow.headers["x-model-variant"] == "stable"
    assert scored >= {"oip-1", "mlflow-1"}


def test_bandit_feedback_credits_requests_made_over_oip_and_grpc(artifacts, tmp_path):
    port = free_port()
    bandit = parse("strategy: bandit\nvariants:\n  stable: {rev: v1}\n  candidate: {rev: v2}\n")
    from api.strategies import build as build_strategy

    strategy = build_strategy(bandit, tmp_path / "state.sqlite")
    settings = Settings(grpc_port=port, grpc_host="127.0.0.1")
    with (
        TestClient(create_app(settings, two_variants(artifacts), strategy)) as client,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        oip = client.post(INFER, json={"id": "oip-7", "inputs": json_inputs(ROWS[:1])}).json()
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            grpc_request(ROWS[:1], raw=False)  # id req-grpc-1
        )
        credited = [
            client.post("/feedback", json={"request_id": rid, "reward": 1}).json()
            for rid in ("oip-7", "req-grpc-1")
        ]
    assert credited == [
        {"request_id": "oip-7", "variant": oip["parameters"]["variant"], "reward": 1.0},
        {
            "request_id": "req-grpc-1",
            "variant": response.parameters["variant"].string_param,
            "reward": 1.0,
        },
    ]


def test_no_background_task_runs_before_the_lifespan_starts_and_none_after_it_stops(artifacts):
    import asyncio

    shadow = parse(
        "strategy: shadow\nvariants:\n  stable: {rev: v1, role: primary}\n"
        "  candidate: {rev: v2, role: shadow}\n"
    )
    app = create_app(Settings(runner="batch"), two_variants(artifacts), build(shadow))
    core = app.state.core

    async def main():
        before = len(asyncio.all_tasks())
        rows = core.rows(orjson.dumps({"instances": ROWS[:1]}))
        with pytest.raises(Exception) as refused:
            await core.predict(rows)
        assert len(asyncio.all_tasks()) == before  # a request started nothing
        await core.start()
        running = len(asyncio.all_tasks()) - before
        answer = await core.predict(rows)
        await core.stop()
        await asyncio.sleep(0)
        return refused.value, running, answer, len(asyncio.all_tasks()) - before

    refused, running, answer, left = asyncio.run(main())
    assert str(refused) == "the model's batcher is not running"
    assert running == 3  # two batchers and the shadow runner
    assert answer.model.variant == "stable" and left == 0


# -- what a new user tried: hostile shapes, other clients' habits


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"parameters": "x"}, 422, "parameters: Input should be an object"),
        (
            {"parameters": {"binary_data_output": "false"}},
            422,
            "parameters.binary_data_output: Input should be a valid boolean",
        ),
        (
            {"outputs": [{"name": "label", "parameters": "x"}]},
            422,
            "outputs[0].parameters: Input should be an object",
        ),
        (
            {"outputs": [{"name": ["label"]}]},
            422,
            "outputs[0].name: Input should be a valid string",
        ),
        (
            {"id": "order 42/é"},
            422,
            "id: 1 to 128 letters, digits or . _ : - (it keys the logs and /feedback)",
        ),
        ({"inputs": "x"}, 422, "inputs: Input should be a valid list"),
    ],
)
def test_oip_request_shapes_are_checked_before_any_model_runs(served, change, status, message):
    client, _, _ = served
    r = client.post(INFER, json={"inputs": json_inputs(ROWS), **change})
    assert (r.status_code, r.json()) == (status, {"error": message})


@pytest.mark.parametrize(
    ("name", "datatype", "value", "message"),
    [
        (
            "island",
            "FP64",
            "Biscoe",
            "input 'island': element 0 ('Biscoe') is not a number, as FP64 is",
        ),
        (
            "bill_depth_mm",
            "INT32",
            15.7,
            "input 'bill_depth_mm': element 0 (15.7) is not a whole number, as INT32 is",
        ),
        (
            "bill_depth_mm",
            "BYTES",
            15.0,
            "input 'bill_depth_mm': element 0 (15.0) is not text, as BYTES is",
        ),
        (
            "bill_depth_mm",
            "FP64",
            True,
            "input 'bill_depth_mm': element 0 (True) is not a number, as FP64 is",
        ),
    ],
)
def test_json_tensor_data_must_be_of_its_datatype(served, name, datatype, value, message):
    client, _, _ = served
    inputs = json_inputs(ROWS[:1])
    tensor = next(t for t in inputs if t["name"] == name)
    tensor["datatype"], tensor["data"] = datatype, [value]
    r = client.post(INFER, json={"inputs": inputs})
    assert (r.status_code, r.json()) == (422, {"error": message})


def test_an_empty_bytes_element_is_a_missing_category(served):
    client, _, expected = served
    rows = [ROWS[2]]  # sex: null
    body, headers = binary_request([{**rows[0], "sex": ""}])
    r = client.post(INFER, content=body, headers=headers)
    _, out = binary_outputs(r.content, int(r.headers["inference-header-content-length"]))
    assert out["label"] == [expected["predictions"][2]["label"]]


def test_zero_rows_and_uneven_rows_are_named(served):
    client, _, _ = served
    inputs = json_inputs(ROWS)
    for tensor in inputs:
        tensor["shape"], tensor["data"] = [0], []
    r = client.post(INFER, json={"inputs": inputs})
    assert r.json() == {"error": "inputs: the tensors hold no rows"}
    inputs = json_inputs(ROWS)
    inputs[0]["shape"], inputs[0]["data"] = [1], inputs[0]["data"][:1]
    r = client.post(INFER, json={"inputs": inputs})
    assert r.json() == {
        "error": "inputs: every input must have the same number of rows, got island 1, "
        "bill_depth_mm 4, flipper_length_mm 4, body_mass_g 4, sex 4"
    }


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_infer_request_is_inflated(served, encoding):
    import gzip
    import zlib

    client, _, expected = served
    body = orjson.dumps({"inputs": json_inputs(ROWS)})
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    r = client.post(INFER, content=packed, headers={"content-encoding": encoding})
    assert r.json()["outputs"][0]["data"] == expected_arrays(expected)[0]
    r = client.post(INFER, content=b"not gzip", headers={"content-encoding": encoding})
    assert r.status_code == 400 and r.json()["error"].startswith(f"the {encoding} body does not")
    r = client.post(INFER, content=body, headers={"content-encoding": "br"})
    assert r.status_code == 415
    assert r.json() == {
        "error": "content encoding 'br' is not supported; send gzip, deflate or identity"
    }


def test_errors_before_a_route_answers_keep_each_protocols_shape(artifacts):
    store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
    with TestClient(create_app(Settings(max_body_bytes=4096), store)) as client:
        big = b"x" * 5000
        oip = client.post(INFER, content=big)
        mlflow = client.post("/invocations", content=big, headers={"content-type": "text/csv"})
        rest = client.post("/predict", content=big, headers={"content-type": "application/json"})
        wrong_method = client.get(INFER)
        empty_version = client.post(f"/v2/models/{NAME}/versions//infer", json={})
        mlflow_method = client.get("/invocations")
    too_big = "request body of 5000 bytes is over the 4096-byte limit"
    assert (oip.status_code, oip.json()) == (413, {"error": too_big})
    assert (mlflow.status_code, mlflow.json()) == (
        413,
        {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": too_big},
    )
    assert rest.json()["error"]["code"] == "body_too_large"
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": f"GET is not allowed on '{INFER}'; use POST"},
    )
    assert wrong_method.headers["content-type"] == "application/json"
    assert (empty_version.status_code, empty_version.json()) == (
        404,
        {"error": f"no such path '/v2/models/{NAME}/versions//infer'"},
    )
    assert mlflow_method.json() == {
        "error_code": "BAD_REQUEST",
        "message": "GET is not allowed on '/invocations'; use POST",
    }


@pytest.mark.parametrize(
    "path", ["/health/live", "/v2/health/ready", f"/v2/models/{NAME}", "/ping", "/model"]
)
def test_head_answers_like_get_without_a_body(served, path):
    client, _, _ = served
    got, head = client.get(path), client.head(path)
    assert (head.status_code, head.content) == (got.status_code, b"")
    assert head.headers["content-type"] == got.headers["content-type"]


def test_grpc_typed_contents_in_the_wrong_field_are_named(served):
    _, stub, _ = served
    request = grpc_request([r for r in ROWS if r["sex"] is not None], raw=False)
    mass = request.inputs[3]
    values = list(mass.contents.fp64_contents)
    mass.contents.ClearField("fp64_contents")
    mass.contents.fp32_contents.extend(values)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "input 'body_mass_g': FP64 elements go in fp64_contents, not fp32_contents"
    )
    request = grpc_request(ROWS[:1], raw=False)
    request.id = "a b/ü"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.details().startswith("id: 1 to 128 letters, digits")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"null", "application/json", "Received null."),
        (b'"x"', "application/json", "Received a string."),
        (b"[1]", "application/json", "Received a list."),
        (
            b'{"dataframe_split": {"columns": [["a"]], "data": [[1]]}}',
            "application/json",
            "dataframe_split: an object with columns (names) and data (rows) is expected",
        ),
        (
            b'{"dataframe_records": [1, 2]}',
            "application/json",
            "dataframe_records: a list of records (objects by column name) is expected",
        ),
        (
            b'{"inputs": {"island": "Biscoe"}}',
            "application/json",
            "inputs: an object of columns (lists) is expected",
        ),
    ],
)
def test_mlflow_shapes_are_refused_in_words(served, body, content_type, message):
    client, _, _ = served
    r = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and r.json()["message"].endswith(message)


def test_mlflow_csv_reads_as_pandas_does(served):
    client, _, expected = served
    names = list(ROWS[0])
    lines = [",".join(names)] + [
        ",".join("NA" if r[n] is None else str(r[n]) for n in names) for r in ROWS
    ]
    body = "\ufeff" + "\r\n".join(lines) + "\r\n"  # a byte order mark, CRLF, NA for missing
    for content_type in ("text/csv", 'text/csv; charset="utf-8"', "text/csv; charset=utf8"):
        r = client.post(
            "/invocations", content=body.encode(), headers={"content-type": content_type}
        )
        assert r.json() == {"predictions": expected_arrays(expected)[0]}, content_type


def test_an_unexpected_failure_in_an_adapter_is_its_protocols_500(served, monkeypatch, caplog):
    import logging

    client, _, _ = served

    def broken(instances):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app.state.core, "rows_of", broken)
    with caplog.at_level(logging.ERROR):
        mlflow = client.post("/invocations", json={"instances": ROWS})
        oip = client.post(INFER, json={"inputs": json_inputs(ROWS)})
    internal = "internal error; see the server log for this request id"
    assert (mlflow.status_code, mlflow.json()) == (
        500,
        {"error_code": "INTERNAL_ERROR", "message": internal},
    )
    assert (oip.status_code, oip.json()) == (500, {"error": internal})
    assert "secret" not in mlflow.text + oip.text
    assert {r.name for r in caplog.records if r.levelno == logging.ERROR} == {
        "lockserve.mlflow",
        "lockserve.oip",
    }


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_json_routes_refuse_a_body_without_a_content_type(artifacts, fast_path):
    store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
    with TestClient(create_app(Settings(fast_path=fast_path), store)) as client:
        for path in ("/predict", "/feedback"):
            r = client.post(path, content=b"{}", headers={"content-type": ""})
            assert r.status_code == 415, path
            assert r.json()["error"]["message"] == (
                "no content type given; send Content-Type: application/json"
            )
            r = client.post(path, content=b"{}", headers={"content-type": "text/plain"})
            assert r.json()["error"]["message"] == (
                "content type 'text/plain' is not supported; send application/json"
            )


def test_a_request_with_many_shape_errors_names_three_and_counts_the_rest(served):
    client, _, _ = served
    r = client.post(INFER, json={"inputs": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
    assert r.json() == {
        "error": "inputs[0].datatype: Field required; inputs[0].shape: Field required; "
        "inputs[1].datatype: Field required (+3 more)"
    }
    r = client.post(
        INFER, json={"inputs": [{"name": "a", "shape": [1]}, {"name": "b", "shape": [1]}]}
    )
    assert r.json() == {
        "error": "inputs[0].datatype: Field required; inputs[1].datatype: Field required"
    }
