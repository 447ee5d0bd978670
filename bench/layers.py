"""The single-row request path in layers, each served alone, so that `make bench` can measure
what every layer adds to the workers' CPU per request (the cost of a layer is the difference
between two neighbouring rows, measured, not sampled).

`gunicorn -c api/gunicorn_conf.py bench.layers:app` with LOCKSERVE_BENCH_LAYER set to one of
LAYERS builds lockserve's app (models resolved and verified as usual) and has POST /predict
stop after that layer with a fixed answer; "context" is the HTTP floor inside the request
context alone (request id, body check, metrics, access log).
"""

from __future__ import annotations

import os
from typing import Any

from bench import floor

LAYERS = {
    "context": "request context (id, body check, metrics, access log) around the floor",
    "read": "+ app entry and the /predict fast path, body read, a fixed answer",
    "validate": "+ validation (pydantic-core over the bytes, missing values)",
    "predict": "+ strategy, runner, features, onnxruntime, the answer rule",
    "full": "+ the answer's JSON (the whole service)",
}
FIXED = floor.BODY


async def _read(core: Any, body: bytes, key: str | None, state: dict[str, Any]) -> bytes:
    return FIXED


async def _validate(core: Any, body: bytes, key: str | None, state: dict[str, Any]) -> bytes:
    core.rows(body)
    return FIXED


async def _predict(core: Any, body: bytes, key: str | None, state: dict[str, Any]) -> bytes:
    await core.predict(core.rows(body), key, state.get("request_id"), None, state)
    return FIXED


HANDLERS = {"read": _read, "validate": _validate, "predict": _predict}


def build(layer: str) -> Any:
    """The app that answers POST /predict after ``layer``."""
    if layer not in LAYERS:
        raise SystemExit(f"LOCKSERVE_BENCH_LAYER={layer!r}: one of {', '.join(LAYERS)}")
    if layer == "context":
        from api import logs
        from api.middleware import RequestContext

        logs.configure()  # as the service does: the access log on
        return RequestContext(floor.app, 1 << 20)
    from api.fastpath import FastPredict
    from api.main import app as service

    if layer in HANDLERS:
        node = service._entry  # noqa: SLF001 - the request context, then each front in turn
        while not isinstance(node, FastPredict):
            node = node.app
        node.handler = HANDLERS[layer]
    return service


def __getattr__(name: str) -> Any:
    """``app``, built when a server asks for it (importing this module builds nothing)."""
    if name == "app":
        globals()["app"] = built = build(os.environ.get("LOCKSERVE_BENCH_LAYER", "full"))
        return built
    raise AttributeError(name)
