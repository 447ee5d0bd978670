"""The Open Inference Protocol v2 over HTTP (KServe, Triton, MLServer clients).

``GET /v2``, ``/v2/health/{live,ready}``, ``/v2/models/{name}[/versions/{version}]``,
``.../ready`` and ``POST .../infer``, with JSON tensors or Triton's binary tensor extension
(``Inference-Header-Content-Length``). ``{name}`` is the artifact's name in dvc.yaml; the
deployment strategy picks the variant behind it unless a version (a model md5) names one.
Errors are ``{"error": "..."}`` with the status of their kind.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response

from api import lenient, oip
from api.core import Core
from api.errors import STATUS
from api.logs import FIELDS
from api.middleware import REQUEST_ID
from api.problems import INTERNAL, Kind, ServiceError
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

log = logging.getLogger("lockserve.oip")

HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"


def _error(kind: Kind, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), STATUS[kind], media_type=JSON)


def _parse(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header of an infer request and the binary tensor data after it."""
    size = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ServiceError(
                Kind.MALFORMED,
                f"Inference-Header-Content-Length {header_length!r} is not a length within "
                f"the {len(body)}-byte body",
            )
        size = int(header_length)
    header = lenient.loads(body[:size])
    if not isinstance(header, dict):
        raise ServiceError(Kind.INVALID, "request body must be a JSON object")
    return header, body[size:]


def _tensors(header: dict[str, Any], binary: bytes) -> list[oip.Tensor]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ServiceError(Kind.INVALID, "inputs: a non-empty list of tensors is required")
    tensors, at = [], 0
    for item in inputs:
        if not isinstance(item, dict) or not all(k in item for k in ("name", "datatype", "shape")):
            raise ServiceError(Kind.INVALID, "inputs: each tensor needs name, datatype and shape")
        name, datatype, shape = item["name"], item["datatype"], item["shape"]
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise ServiceError(Kind.INVALID, f"input {name!r}: shape must be a list of integers")
        parameters = item.get("parameters") or {}
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(binary):
                raise ServiceError(
                    Kind.INVALID, f"input {name!r}: binary_data_size {size!r} runs past the body"
                )
            data = oip.from_raw(name, datatype, binary[at : at + size])
            at += size
        elif "data" in item:
            data = item["data"]
        else:
            raise ServiceError(Kind.INVALID, f"input {name!r}: no data and no binary_data_size")
        tensors.append(oip.Tensor(name, datatype, shape, data, parameters))
    if at != len(binary):
        raise ServiceError(
            Kind.INVALID, f"{len(binary) - at} bytes of binary data follow the last input"
        )
    return tensors


def _response(header: dict[str, Any], answer: Any, request_id: str) -> Response:
    """JSON tensors, or binary ones where the request asked for them."""
    requested = header.get("outputs")
    if requested is not None and not (
        isinstance(requested, list) and all(isinstance(o, dict) and "name" in o for o in requested)
    ):
        raise ServiceError(Kind.INVALID, "outputs: a list of {name, parameters} is expected")
    all_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
    wants_binary = {
        o["name"]: bool((o.get("parameters") or {}).get("binary_data", all_binary))
        for o in requested or []
    }
    tensors = oip.outputs(answer, [o["name"] for o in requested] if requested else None)
    body: dict[str, Any] = {
        "model_name": answer.model.resolved.name,
        "model_version": answer.model.md5,
        "id": request_id,
        "parameters": oip.answer_parameters(answer),
        "outputs": [],
    }
    blobs = []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if wants_binary.get(tensor.name, all_binary):
            blob = oip.raw(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            data = tensor.data
            entry["data"] = data.tolist() if hasattr(data, "tolist") else data
        body["outputs"].append(entry)
    payload = orjson.dumps(body)
    if not blobs:
        return Response(payload, media_type=JSON)
    return Response(
        payload + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(payload))},
    )


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add the /v2 routes."""
    api = APIRouter(prefix="/v2", tags=["Open Inference Protocol"])

    @api.get("", summary="Server metadata")
    def server_metadata() -> dict[str, Any]:
        return {"name": "lockserve", "version": app.version, "extensions": oip.EXTENSIONS}

    @api.get("/health/live", summary="The server is live")
    def server_live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/health/ready", summary="Every variant is loaded and verified")
    def server_ready() -> Response:
        ready = core.ready
        return Response(orjson.dumps({"ready": ready}), 200 if ready else 503, media_type=JSON)

    def metadata(name: str, version: str | None) -> Response:
        try:
            oip.check_model(core, name, version)
        except ServiceError as exc:
            return _error(exc.kind, exc.message)
        return Response(orjson.dumps(oip.model_metadata(core)), media_type=JSON)

    def model_ready(name: str, version: str | None) -> Response:
        try:
            oip.check_model(core, name, version)
        except ServiceError as exc:
            return _error(exc.kind, exc.message)
        ready = core.ready
        body = {"name": name, "ready": ready}
        return Response(orjson.dumps(body), 200 if ready else 503, media_type=JSON)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        state = request.state._state
        try:
            oip.check_model(core, name, version)
            header, binary = _parse(await request.body(), request.headers.get(HEADER_LENGTH))
            given = header.get("id")
            if isinstance(given, str) and REQUEST_ID.match(given):
                state["request_id"] = given  # the client's id keys logs and feedback
            rows = oip.rows(core, _tensors(header, binary))
            answer = await core.predict(
                rows, request.headers.get("x-routing-key"), state["request_id"], version, state
            )
            return _response(
                header, answer, given if isinstance(given, str) else state["request_id"]
            )
        except ServiceError as exc:
            return _error(exc.kind, exc.message)
        except Exception:  # noqa: BLE001 - never a trace in a response
            log.exception(
                "unhandled error on %s",
                request.url.path,
                extra={FIELDS: {"request_id": state.get("request_id")}},
            )
            return _error(Kind.INTERNAL, INTERNAL)

    @api.get("/models/{name}", summary="Model metadata: inputs, outputs, versions")
    def get_model(name: str) -> Response:
        return metadata(name, None)

    @api.get("/models/{name}/versions/{version}", summary="Metadata of one version (md5)")
    def get_version(name: str, version: str) -> Response:
        return metadata(name, version)

    @api.get("/models/{name}/ready", summary="The model is ready")
    def get_ready(name: str) -> Response:
        return model_ready(name, None)

    @api.get("/models/{name}/versions/{version}/ready", summary="One version is ready")
    def get_version_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    @api.post("/models/{name}/infer", summary="Infer with the variant the strategy picks")
    async def post_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @api.post("/models/{name}/versions/{version}/infer", summary="Infer with one version (md5)")
    async def post_version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    app.include_router(api)
