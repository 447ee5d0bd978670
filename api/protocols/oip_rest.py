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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class BinaryParameters(_Strict):
    """Parameters of a tensor or request: Triton's binary extension, the rest free."""

    model_config = ConfigDict(strict=True, extra="allow")

    binary_data_size: int | None = Field(None, ge=0)
    binary_data: bool | None = None
    binary_data_output: bool | None = None


class RequestInput(_Strict):
    name: str
    datatype: str
    shape: list[int]
    parameters: BinaryParameters | None = None
    data: Any = None


class RequestOutput(_Strict):
    name: str
    parameters: BinaryParameters | None = None


class InferenceRequest(_Strict):
    """An infer request's JSON: the protocol's shape, checked before any tensor is read."""

    id: str | None = None
    parameters: BinaryParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


HEADER_LENGTH = "inference-header-content-length"
_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        }
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a body that does not parse or breaks the protocol", "content": _ERROR},
    404: {"description": "no such model or version", "content": _ERROR},
    413: {"description": "body too large", "content": _ERROR},
    415: {
        "description": "a content encoding other than gzip, deflate, identity",
        "content": _ERROR,
    },
    422: {"description": "inputs that break the model's input schema", "content": _ERROR},
    503: {"description": "not ready", "content": _ERROR},
}
JSON = "application/json"


def _error(kind: Kind, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), STATUS[kind], media_type=JSON)


def _where(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors as ``inputs[0].datatype: Field required; ...`` (the first three)."""
    parts = []
    for err in errors[:3]:
        where = ""
        for step in err["loc"]:
            where += f"[{step}]" if isinstance(step, int) else f".{step}" if where else str(step)
        message = "Input should be an object" if err["type"] == "model_type" else err["msg"]
        parts.append(f"{where}: {message}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _parse(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
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
    try:
        request = InferenceRequest.model_validate(header)
    except ValidationError as exc:
        raise ServiceError(Kind.INVALID, _where(exc.errors())) from None
    if request.id is not None and not REQUEST_ID.match(request.id):
        raise ServiceError(
            Kind.INVALID,
            "id: 1 to 128 letters, digits or . _ : - (it keys the logs and /feedback)",
        )
    return request, body[size:]


def _tensors(request: InferenceRequest, binary: bytes) -> list[oip.Tensor]:
    tensors, at = [], 0
    for item in request.inputs:
        size = item.parameters.binary_data_size if item.parameters else None
        if size is not None:
            if at + size > len(binary):
                raise ServiceError(
                    Kind.INVALID,
                    f"input {item.name!r}: binary_data_size {size} runs past the body",
                )
            data = oip.from_raw(item.name, item.datatype, binary[at : at + size])
            at += size
        elif item.data is not None:
            data = oip.checked(item.name, item.datatype, item.data)
        else:
            raise ServiceError(
                Kind.INVALID, f"input {item.name!r}: no data and no binary_data_size"
            )
        tensors.append(oip.Tensor(item.name, item.datatype, item.shape, data))
    if at != len(binary):
        raise ServiceError(
            Kind.INVALID, f"{len(binary) - at} bytes of binary data follow the last input"
        )
    return tensors


def _response(request: InferenceRequest, answer: Any, request_id: str) -> Response:
    """JSON tensors, or binary ones where the request asked for them."""
    all_binary = bool(request.parameters and request.parameters.binary_data_output)
    wants_binary = {}
    for output in request.outputs or []:
        asked = output.parameters.binary_data if output.parameters else None
        wants_binary[output.name] = all_binary if asked is None else asked
    requested = [o.name for o in request.outputs] if request.outputs else None
    tensors = oip.outputs(answer, requested)
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
    api = APIRouter(prefix="/v2", tags=["Open Inference Protocol"], responses=ERRORS)
    app.error_shapes.add(
        lambda path: path == "/v2" or path.startswith("/v2/"),
        lambda status, message: orjson.dumps({"error": message}),
    )

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
            oip.check_model(core, name, None)  # the core checks the version
            parsed, binary = _parse(await request.body(), request.headers.get(HEADER_LENGTH))
            if parsed.id is not None:
                state["request_id"] = parsed.id  # the client's id keys logs and feedback
            rows = oip.rows(core, _tensors(parsed, binary))
            answer = await core.predict(
                rows, request.headers.get("x-routing-key"), state["request_id"], version, state
            )
            return _response(parsed, answer, state["request_id"])
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
