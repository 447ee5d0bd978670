"""Other people's clients against a running lockserve, run in their own environment
(.venv-clients: tritonclient, the kserve SDK, mlflow; none of lockserve's packages).

``python tests/clients/speak.py CLIENT HTTP_URL GRPC_ADDRESS MODEL ROWS_JSON`` prints one JSON
object: for each mode of that client, the labels and probabilities (or MLflow predictions) it
got for the rows, what the metadata and health calls answered, and how it saw a bad request.
One client a process: tritonclient and kserve each register the protocol's messages under the
same names in protobuf's default pool. The clients' own packages only.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
import pandas as pd


def triton_inputs(module: Any, frame: pd.DataFrame, binary: bool) -> list:
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            data = np.array(column.tolist(), dtype=object)
            tensor = module.InferInput(name, [len(frame)], "BYTES")
        else:
            data = column.to_numpy(np.float32)
            tensor = module.InferInput(name, [len(frame)], "FP32")
        if module.__name__.endswith("http"):
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def labels_and_proba(result: Any) -> dict[str, Any]:
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
    return {"labels": labels, "probabilities": result.as_numpy("probabilities").tolist()}


def triton_http(url: str, model: str, frame: pd.DataFrame) -> dict[str, Any]:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(url.removeprefix("http://"))
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }
    for binary in (False, True):
        outputs = [
            http.InferRequestedOutput("label", binary_data=binary),
            http.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer(model, triton_inputs(http, frame, binary), outputs=outputs)
        out["binary" if binary else "json"] = labels_and_proba(result)
    result = client.infer(model, triton_inputs(http, frame, True))  # outputs: all, binary
    out["default_outputs"] = labels_and_proba(result)
    out["model_version"] = result.get_response()["model_version"]
    bad = frame.copy()
    bad["island"] = "Atlantis"
    try:
        client.infer(model, triton_inputs(http, bad, False))
    except InferenceServerException as exc:
        out["error"] = {"status": exc.status(), "message": exc.message()}
    try:
        client.get_model_metadata("no-such-model")
    except InferenceServerException as exc:
        out["missing_model"] = {"status": exc.status(), "message": exc.message()}
    client.close()
    return out


def triton_grpc(address: str, model: str, frame: pd.DataFrame) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(address)
    metadata = client.get_model_metadata(model, as_json=True)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "metadata": metadata,
    }
    result = client.infer(model, triton_inputs(grpcclient, frame, True))
    out["binary"] = labels_and_proba(result)
    response = result.get_response(as_json=True)
    out["model_version"] = response["model_version"]
    out["parameters"] = response.get("parameters", {})
    bad = frame.copy()
    bad["island"] = "Atlantis"
    try:
        client.infer(model, triton_inputs(grpcclient, bad, True))
    except InferenceServerException as exc:
        out["error"] = {"status": exc.status(), "message": exc.message()}
    try:
        client.get_model_metadata("no-such-model")
    except InferenceServerException as exc:
        out["missing_model"] = {"status": exc.status(), "message": exc.message()}
    client.close()
    return out


def kserve_inputs(frame: pd.DataFrame) -> list:
    from kserve import InferInput

    inputs = []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            tensor = InferInput(name, [len(frame)], "BYTES")
            tensor.set_data_from_numpy(np.array(column.tolist(), dtype=object), binary_data=False)
        else:
            tensor = InferInput(name, [len(frame)], "FP64")
            tensor.set_data_from_numpy(column.to_numpy(np.float64), binary_data=False)
        inputs.append(tensor)
    return inputs


async def kserve_rest(url: str, model: str, frame: pd.DataFrame) -> dict[str, Any]:
    import httpx
    from kserve import InferenceRESTClient, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, model),
    }
    request = InferRequest(model, kserve_inputs(frame), parameters={"content_type": "pd"})
    response = await client.infer(url, request, model_name=model)
    by_name = {o.name: o for o in response.outputs}
    labels = [x.decode() if isinstance(x, bytes) else x for x in by_name["label"].data]
    proba = np.asarray(by_name["probabilities"].data, np.float32)
    out["json"] = {
        "labels": labels,
        "probabilities": proba.reshape(by_name["probabilities"].shape).tolist(),
    }
    out["model_version"] = response.model_version
    bad = frame.copy()
    bad["island"] = "Atlantis"
    try:
        await client.infer(url, InferRequest(model, kserve_inputs(bad)), model_name=model)
    except httpx.HTTPStatusError as exc:
        out["error"] = {"status": exc.response.status_code, "body": exc.response.json()}
    await client.close()
    return out


async def kserve_grpc(address: str, model: str, frame: pd.DataFrame) -> dict[str, Any]:
    import grpc
    from kserve import InferenceGRPCClient, InferRequest

    client = InferenceGRPCClient(address, timeout=30, retries=2)
    out: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    request = InferRequest(model, kserve_inputs(frame), parameters={"content_type": "pd"})
    response = await client.infer(request)
    by_name = {o.name: o for o in response.outputs}
    labels = [x.decode() if isinstance(x, bytes) else x for x in by_name["label"].as_numpy()]
    out["binary"] = {
        "labels": [str(x) for x in labels],
        "probabilities": by_name["probabilities"].as_numpy().tolist(),
    }
    bad = frame.copy()
    bad["island"] = "Atlantis"
    try:
        await client.infer(InferRequest(model, kserve_inputs(bad)))
    except grpc.RpcError as exc:
        out["error"] = {"status": exc.code().name, "message": exc.details()}
    await client.close()
    return out


def mlflow_scoring(url: str, frame: pd.DataFrame) -> dict[str, Any]:
    import requests
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient
    from mlflow.utils.proto_json_utils import dump_input_data

    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = ScoringServerClient(host, int(port))
    out: dict[str, Any] = {"ping": client.ping(), "version": client.get_version()}
    out["client"] = client.invoke(frame).get_predictions(predictions_format="ndarray").tolist()
    records = json.loads(frame.to_json(orient="records"))
    bodies = {  # the four JSON formats of MLflow's scoring protocol documentation
        "dataframe_split": dump_input_data(frame),
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "instances": json.dumps({"instances": records}),
        "inputs": json.dumps(
            {"inputs": {k: json.loads(frame[k].to_json(orient="values")) for k in frame}}
        ),
    }
    for key, body in bodies.items():
        r = requests.post(
            url + "/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        out[key] = {"status": r.status_code, "body": r.json()}
    r = requests.post(
        url + "/invocations",
        data=frame.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
    )
    out["csv"] = {"status": r.status_code, "body": r.json()}
    bad = frame.copy()
    bad["island"] = "Atlantis"
    r = requests.post(
        url + "/invocations",
        data=dump_input_data(bad),
        headers={"Content-Type": "application/json"},
    )
    out["error"] = {"status": r.status_code, "body": r.json()}
    return out


CLIENTS = {
    "triton_http": lambda http, grpc, model, frame: triton_http(http, model, frame),
    "triton_grpc": lambda http, grpc, model, frame: triton_grpc(grpc, model, frame),
    "kserve_rest": lambda http, grpc, model, frame: asyncio.run(kserve_rest(http, model, frame)),
    "kserve_grpc": lambda http, grpc, model, frame: asyncio.run(kserve_grpc(grpc, model, frame)),
    "mlflow": lambda http, grpc, model, frame: mlflow_scoring(http, frame),
}


def main() -> None:
    client, http_url, grpc_address, model, rows = sys.argv[1:6]
    frame = pd.DataFrame(json.loads(rows))
    json.dump(CLIENTS[client](http_url, grpc_address, model, frame), sys.stdout, default=str)


if __name__ == "__main__":
    main()
