"""The Open Inference Protocol v2 over gRPC (service ``inference.GRPCInferenceService``).

A grpcio asyncio server in each worker process, on the same event loop, core, strategies,
runners and metrics as HTTP, listening on ``LOCKSERVE_GRPC_PORT`` (8001; 0 turns it off) with
SO_REUSEPORT so that every worker takes calls. It is started and stopped by the app's lifespan:
on SIGTERM or reload it stops taking calls and lets those in progress finish. Inputs come as
typed ``contents`` or ``raw_input_contents``; outputs always as ``raw_output_contents``, as
Triton answers. Errors map to gRPC status codes by kind; the standard ``grpc.health.v1``
service answers too. Stubs: api/proto (``make proto``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from api import metrics, oip
from api.core import Core
from api.logs import FIELDS
from api.middleware import REQUEST_ID
from api.problems import INTERNAL, Kind, ServiceError
from api.proto import open_inference_grpc_pb2 as pb
from api.proto import open_inference_grpc_pb2_grpc as pb_grpc
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

log = logging.getLogger("lockserve.grpc")
access = logging.getLogger("lockserve.access")

SERVICE = "inference.GRPCInferenceService"
DRAIN_S = 0.5  # as HTTP (api/worker.py): calls on the wire when the server starts closing
METHODS = {  # the proto's method -> Servicer's
    "ServerLive": "server_live",
    "ServerReady": "server_ready",
    "ModelReady": "model_ready",
    "ServerMetadata": "server_metadata",
    "ModelMetadata": "model_metadata",
    "ModelInfer": "model_infer",
}
CODES = {
    Kind.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    Kind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Kind.INTERNAL: grpc.StatusCode.INTERNAL,
}
# the InferTensorContents field that holds each datatype
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameters(values: dict[str, str]) -> dict[str, pb.InferParameter]:
    return {key: pb.InferParameter(string_param=value) for key, value in values.items()}


def tensors(request: pb.ModelInferRequest) -> list[oip.Tensor]:
    """The request's input tensors, from raw contents or the typed field of each datatype."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServiceError(
            Kind.INVALID,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs",
        )
    out = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            data: Any = oip.from_raw(tensor.name, tensor.datatype, raw[i])
        else:
            field = CONTENTS.get(tensor.datatype)
            if field is None:
                raw_only = " (FP16 only as raw_input_contents)" if tensor.datatype == "FP16" else ""
                raise ServiceError(
                    Kind.INVALID,
                    f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported"
                    + raw_only,
                )
            data = list(getattr(tensor.contents, field))
            if not data:
                used = [f.name for f, _ in tensor.contents.ListFields()]
                if used:
                    raise ServiceError(
                        Kind.INVALID,
                        f"input {tensor.name!r}: {tensor.datatype} elements go in {field}, "
                        f"not {used[0]}",
                    )
        out.append(oip.Tensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    return out


class Servicer:
    """The six OIP calls over the core, each given the call's state (request id, routing key,
    and what the access line reports)."""

    def __init__(self, core: Core, version: str) -> None:
        self.core = core
        self.version = version

    async def server_live(self, request: Any, state: dict[str, Any]) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, state: dict[str, Any]) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready)

    async def model_ready(self, request: Any, state: dict[str, Any]) -> pb.ModelReadyResponse:
        oip.check_model(self.core, request.name, request.version or None)
        return pb.ModelReadyResponse(ready=self.core.ready)

    async def server_metadata(
        self, request: Any, state: dict[str, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="lockserve", version=self.version, extensions=oip.EXTENSIONS
        )

    async def model_metadata(self, request: Any, state: dict[str, Any]) -> pb.ModelMetadataResponse:
        oip.check_model(self.core, request.name, request.version or None)
        meta = oip.model_metadata(self.core)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_infer(self, request: Any, state: dict[str, Any]) -> pb.ModelInferResponse:
        version = request.model_version or None
        oip.check_model(self.core, request.model_name, None)  # the core checks the version
        if request.id:
            if not REQUEST_ID.match(request.id):
                raise ServiceError(
                    Kind.INVALID,
                    "id: 1 to 128 letters, digits or . _ : - (it keys the logs and /feedback)",
                )
            state["request_id"] = request.id
        rows = oip.rows(self.core, tensors(request))
        answer = await self.core.predict(
            rows, state.get("routing_key"), state["request_id"], version, state
        )
        requested = [o.name for o in request.outputs]
        outputs = oip.outputs(answer, requested or None)
        parameters = oip.answer_parameters(answer)
        if answer.model.backend.task == "classification":
            parameters["classes"] = ",".join(str(c) for c in answer.model.backend.classes)
        return pb.ModelInferResponse(
            model_name=answer.model.resolved.name,
            model_version=answer.model.md5,
            id=state["request_id"],
            parameters=_parameters(parameters),
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=t.name, datatype=t.datatype, shape=t.shape
                )
                for t in outputs
            ],
            raw_output_contents=[oip.raw(t) for t in outputs],
        )


Method = Callable[[Any, dict[str, Any]], Awaitable[Any]]


class Gate:
    """Calls in progress, and whether the server is closing (new calls: UNAVAILABLE)."""

    def __init__(self) -> None:
        self.closing = False
        self.inflight = 0


def _observed(name: str, method: Method, gate: Gate) -> Callable[[Any, Any], Awaitable[Any]]:
    """One call: request id, errors as status codes by kind, an access line and metrics."""
    route = f"grpc:{SERVICE}/{name}"

    async def call(request: Any, context: Any) -> Any:
        gate.inflight += 1
        try:
            return await observed(request, context)
        finally:
            gate.inflight -= 1

    async def observed(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        meta = dict(context.invocation_metadata() or ())
        given = meta.get("x-request-id", "")
        state: dict[str, Any] = {
            "request_id": given if REQUEST_ID.match(given) else os.urandom(16).hex(),
            "routing_key": meta.get("x-routing-key"),
        }
        code = grpc.StatusCode.OK
        try:
            if gate.closing:
                raise ServiceError(Kind.UNAVAILABLE, "the server is shutting down; retry")
            return await method(request, state)
        except ServiceError as exc:
            code = CODES[exc.kind]
            await context.abort(code, exc.message)
        except Exception as exc:  # noqa: BLE001 - never a trace to the client
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception(
                "unhandled error on %s", route, extra={FIELDS: {"request_id": state["request_id"]}}
            )
            await context.abort(code, INTERNAL)
        finally:
            elapsed = time.perf_counter() - started
            labels = (route, state.get("variant") or "", code.name)
            metrics.REQUESTS.labels(*labels).inc()
            metrics.LATENCY.labels(*labels).observe(elapsed)
            access.info(
                "GRPC %s %s",
                name,
                code.name,
                extra={
                    FIELDS: {
                        "request_id": state["request_id"],
                        "method": "GRPC",
                        "path": route,
                        "status": code.name,
                        "latency_ms": round(elapsed * 1000, 3),
                        "batch_size": state.get("batch_size"),
                        "variant": state.get("variant"),
                        "model_md5": state.get("model_md5"),
                    }
                },
            )

    return call


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on ``host:port`` (connections of a server that just
    stopped, in TIME_WAIT, do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class GrpcServer:
    """The gRPC server of one worker process, for the app's lifespan."""

    def __init__(self, core: Core, settings: Settings, version: str) -> None:
        self.core = core
        self.address = f"{settings.grpc_host}:{settings.grpc_port}"
        self.grace_s = settings.grpc_grace_s
        self.max_message = settings.max_body_bytes
        self.version = version
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._gate = Gate()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),  # every worker listens on the one port
                ("grpc.max_receive_message_length", self.max_message),
            ]
        )
        servicer = Servicer(self.core, self.version)
        handlers = {
            name: _observed(name, getattr(servicer, method), self._gate)
            for name, method in METHODS.items()
        }
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Bound(handlers), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {self.address}: {exc}") from None
        await server.start()
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def stop(self) -> None:
        """Refuse new calls with UNAVAILABLE (clients retry it), let those in progress finish
        (at most the grace period), then stop."""
        if self._server is None:
            return
        self._gate.closing = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        deadline = time.monotonic() + self.grace_s
        await asyncio.sleep(min(DRAIN_S, self.grace_s))  # calls already sent get UNAVAILABLE
        while self._gate.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self._server.stop(max(0.0, deadline - time.monotonic()))
        self._server = None


class _Bound(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer's methods, each wrapped by :func:`_observed`."""

    def __init__(self, handlers: dict[str, Callable[[Any, Any], Awaitable[Any]]]) -> None:
        for name, handler in handlers.items():
            setattr(self, name, handler)


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Run the gRPC server beside the HTTP app when LOCKSERVE_GRPC_PORT is not 0."""
    if settings.grpc_port:
        app.services.append(GrpcServer(core, settings, app.version))


def preflight(settings: Settings) -> str | None:
    """Every worker binds the port with SO_REUSEPORT, which would share it silently with
    another server already listening there: refuse instead."""
    if settings.grpc_port and port_in_use(settings.grpc_host, settings.grpc_port):
        return (
            f"gRPC port {settings.grpc_host}:{settings.grpc_port} is in use "
            "(LOCKSERVE_GRPC_PORT; 0 turns gRPC off)"
        )
    return None
