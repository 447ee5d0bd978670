"""The thin ASGI handler for POST /predict, in front of FastAPI's router.

It saves FastAPI's per-request routing and Request/Response work by calling the REST adapter's
handler directly; everything else (and /predict when it is off) goes to FastAPI. Same core,
same errors, same OpenAPI description.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from api.errors import body_of, error_body
from api.logs import FIELDS
from api.problems import INTERNAL, ServiceError

log = logging.getLogger("lockserve.fastpath")

JSON = [(b"content-type", b"application/json")]

Handler = Callable[[Any, bytes, "str | None", dict[str, Any]], Awaitable[bytes]]


def is_json(content_type: bytes | None) -> bool:
    """application/json or application/*+json (parameters such as charset allowed)."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def not_json(content_type: bytes | None) -> str | None:
    """Why a body declared ``content_type`` is not taken as JSON, or None when it is."""
    if is_json(content_type):
        return None
    if not content_type:
        return "no content type given; send Content-Type: application/json"
    given = content_type.decode("latin-1")
    return f"content type {given!r} is not supported; send application/json"


class FastPredict:
    """ASGI middleware answering POST /predict with ``handler(core, body, routing_key, state)``."""

    def __init__(self, app: Any, core: Any, handler: Handler) -> None:
        self.app = app
        self.core = core
        self.handler = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        routing_key = content_type = None
        for key, value in scope["headers"]:
            if key == b"x-routing-key":
                routing_key = value.decode("latin-1")
            elif key == b"content-type":
                content_type = value
        state = scope.setdefault("state", {})
        state["route"] = "/predict"
        problem = not_json(content_type)
        if problem is not None:
            await send_json(send, 415, orjson.dumps(error_body(415, problem)))
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            status, payload = (
                200,
                await self.handler(self.core, b"".join(chunks), routing_key, state),
            )
        except ServiceError as error:
            status, body = body_of(error)
            payload = orjson.dumps(body)
        except Exception:  # noqa: BLE001 - never a trace in a response
            log.exception(
                "unhandled error on POST /predict",
                extra={FIELDS: {"request_id": state.get("request_id")}},
            )
            status, payload = 500, orjson.dumps(error_body(500, INTERNAL))
        await send_json(send, status, payload)


async def send_json(send: Any, status: int, payload: bytes) -> None:
    """Answer with ``payload``, a JSON body, in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})
