"""The thin ASGI handler for POST /predict, in front of FastAPI's router.

It saves FastAPI's per-request routing and Request/Response work by calling the prediction
core directly; everything else (and /predict when it is off) goes to FastAPI. Same core, same
errors, same OpenAPI description.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from api.core import PredictCore
from api.errors import INTERNAL, ApiError, error_body
from api.logs import FIELDS

log = logging.getLogger("lockserve.fastpath")

JSON = [(b"content-type", b"application/json")]


class FastPredict:
    """ASGI middleware answering POST /predict with :class:`PredictCore`."""

    def __init__(self, app: Any, core: PredictCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        routing_key = None
        for key, value in scope["headers"]:
            if key == b"x-routing-key":
                routing_key = value.decode("latin-1")
        try:
            status, payload = (
                200,
                await self.core.predict(
                    b"".join(chunks), routing_key, scope.setdefault("state", {})
                ),
            )
        except ApiError as error:
            status, payload = error.status, orjson.dumps(error.body())
        except Exception:  # noqa: BLE001 - never a trace in a response
            request_id = scope.get("state", {}).get("request_id")
            log.exception(
                "unhandled error on POST /predict", extra={FIELDS: {"request_id": request_id}}
            )

            status, payload = 500, orjson.dumps(error_body(500, INTERNAL))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
