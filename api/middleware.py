"""Request context (pure ASGI): request id, body limit, one JSON access log line, metrics.

Every request body is read here, at most ``max_body_bytes`` of it, before the app sees the
request: an oversize body gets 413 without touching a model. What a body must be (JSON, CSV,
tensors) is each protocol adapter's to say.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import zlib
from typing import Any

from api import metrics
from api.errors import ErrorShapes
from api.logs import FIELDS, AccessLog
from api.problems import INTERNAL

log = logging.getLogger("lockserve.access")
access = AccessLog(log)


def flush() -> None:
    """Write what this process still holds: request counts and latencies, access lines."""
    try:
        metrics.TALLY.flush()
    finally:
        access.flush()


BODY_METHODS = {b"POST", b"PUT", b"PATCH"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Scope = dict[str, Any]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def route_of(scope: Scope) -> str:
    """The metrics label of a request: its route's template (``/v2/models/{name}/infer``), or
    ``other`` for a path no route matched (bounded cardinality)."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return route.path
    return scope.get("state", {}).get("route") or "other"


LINGER_BYTES = 64 << 20  # most of a refused body read and discarded before closing
LINGER_S = 10.0  # and for how long
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": None}


class BodyProblem(Exception):
    """A body the service cannot take as sent; ``status`` says why in HTTP terms, ``unread``
    whether some of it is still on its way (to be drained after the answer)."""

    def __init__(self, status: int, message: str, unread: bool = False) -> None:
        super().__init__(message)
        self.status, self.unread = status, unread


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip, deflate or identity) compressed it,
    at most ``limit`` bytes of it: a body that inflates past the limit (a zip bomb) is refused
    without inflating the rest."""
    name = encoding.strip().lower()
    if name not in ENCODINGS:
        raise BodyProblem(
            415, f"content encoding {name!r} is not supported; send gzip, deflate or identity"
        )
    wbits = ENCODINGS[name]
    if wbits is None:
        return body
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise BodyProblem(400, f"the {name} body does not inflate: {exc}") from None
    if inflater.unconsumed_tail or (len(out) == limit and inflater.decompress(b"", 1)):
        raise BodyProblem(413, f"the {name} body inflates past the {limit}-byte limit")
    if not inflater.eof:
        raise BodyProblem(400, f"the {name} body is truncated")
    return out


async def linger(receive: Any, max_bytes: int = LINGER_BYTES, max_s: float = LINGER_S) -> int:
    """Read and discard what is left of a request body, up to ``max_bytes`` or ``max_s``
    seconds (whichever comes first); return how many bytes were discarded."""
    discarded = 0
    try:
        async with asyncio.timeout(max_s):
            while discarded <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    break
                discarded += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        pass
    return discarded


class RequestContext:
    """Wraps the app: tags each HTTP request with an id, checks its body, logs its outcome.

    HEAD is answered as GET without the body. A failure that escapes the app is answered (or,
    when the answer has already started, only kept from the server's plain-text log: the
    app's handler has logged it as JSON).
    """

    def __init__(self, app: Any, max_body_bytes: int, shapes: ErrorShapes | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.shapes = shapes or ErrorShapes()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = (given.decode("latin-1") if given else "") or os.urandom(16).hex()
        if not REQUEST_ID.match(request_id):
            request_id = os.urandom(16).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = {"code": 500, "started": False}
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", state["request_id"].encode()))
                message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            if scope["method"].encode() in BODY_METHODS:
                try:
                    receive = await self._check_body(scope, receive)
                except BodyProblem as problem:
                    drain = receive if problem.unread else None
                    await self._reject(
                        send_with_id, scope["path"], problem.status, str(problem), drain
                    )
                    return
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - never a trace, in a response or a plain log line
            if not status["started"]:
                log.exception(
                    "unhandled error on %s %s",
                    scope["method"],
                    scope["path"],
                    extra={FIELDS: {"request_id": state["request_id"]}},
                )
                await self._reject(send_with_id, scope["path"], 500, INTERNAL)
        finally:
            elapsed = time.perf_counter() - started
            metrics.TALLY.add(
                (route_of(scope), state.get("variant") or "", str(status["code"])), elapsed
            )
            method, path = scope["method"], scope["path"]
            access.info(
                f"{method} {path} {status['code']}",
                {
                    "request_id": state["request_id"],
                    "method": method,
                    "path": path,
                    "status": status["code"],
                    "latency_ms": round(elapsed * 1000, 3),
                    "batch_size": state.get("batch_size"),
                    "variant": state.get("variant"),
                    "model_md5": state.get("model_md5"),
                },
            )

    async def _check_body(self, scope: Scope, receive: Any) -> Any:
        """Return a replaying ``receive`` for an acceptable body (inflated when it came
        compressed), else raise BodyProblem."""
        declared = _header(scope, b"content-length")
        limit = self.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyProblem(
                413,
                f"request body of {int(declared)} bytes is over the {limit}-byte limit",
                # a client waiting for 100 Continue has sent nothing: nothing to drain
                unread=_header(scope, b"expect") is None,
            )
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyProblem(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyProblem(413, f"request body is over the {limit}-byte limit", True)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        encoding = _header(scope, b"content-encoding")
        if encoding is not None:
            body = inflate(body, encoding.decode("latin-1"), limit)
            scope["headers"] = [
                (k, v)
                for k, v in scope["headers"]
                if k not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode())]
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _reject(
        self, send: Any, path: str, status: int, message: str, drain: Any = None
    ) -> None:
        """Answer an error. With ``drain`` (the request's ``receive``), the body still on its
        way is read and discarded after the answer is written and before the connection
        closes, so a client that writes its whole body before reading gets the answer rather
        than a reset (bounded: LINGER_BYTES, LINGER_S)."""
        payload = self.shapes.body(path, status, message)
        headers = [(b"content-type", b"application/json")]
        if drain is not None:
            # no length: the answer ends with the last (empty) part, after the drain, so a
            # server that closes a connection once its answer is whole (granian) waits for it
            headers.append((b"connection", b"close"))
        else:
            headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": drain is not None})
        if drain is not None:
            await linger(drain)
            await send({"type": "http.response.body", "body": b""})
