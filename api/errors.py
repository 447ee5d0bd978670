"""HTTP face of errors: a :class:`~api.problems.Kind` as a status, every error as JSON
{"error": {"code", "message", "details"}} — or in the shape of the protocol whose path it is
(an adapter registers its own in :class:`ErrorShapes`) — and the FastAPI handlers that make
it so."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from api.logs import FIELDS
from api.problems import INTERNAL, Kind, ServiceError, from_validation

log = logging.getLogger("lockserve.errors")

STATUS = {
    Kind.MALFORMED: 400,
    Kind.INVALID: 422,
    Kind.UNAUTHORIZED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
    Kind.UNAVAILABLE: 503,
    Kind.INTERNAL: 500,
}

CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "not_ready",
}


def error_body(status: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {
        "error": {"code": CODES.get(status, "error"), "message": message, "details": details or []}
    }


Render = Callable[[int, str], bytes]  # (status, message) -> the JSON body of that error


class ErrorShapes:
    """Which error body a path gets: an adapter's own for its paths, lockserve's elsewhere.

    Errors raised before a route answers (a body over the limit, an unknown path, a method a
    route does not take, a failure no route caught) take their shape from here.
    """

    def __init__(self) -> None:
        self._shapes: list[tuple[Callable[[str], bool], Render]] = []

    def add(self, match: Callable[[str], bool], render: Render) -> None:
        self._shapes.append((match, render))

    def body(self, path: str, status: int, message: str, details: list[Any] | None = None) -> bytes:
        for match, render in self._shapes:
            if match(path):
                return render(status, message)
        return orjson.dumps(error_body(status, message, details))


def body_of(error: ServiceError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body lockserve's own REST API answers ``error`` with."""
    status = STATUS[error.kind]
    return status, error_body(status, error.message, error.details)


def error_response(
    status: int, message: str, details: list[Any] | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, details), status_code=status, headers=headers)


def _shaped(
    request: Request,
    status: int,
    message: str,
    details: list[Any] | None = None,
    headers: dict | None = None,
) -> Response:
    shapes = getattr(request.app, "error_shapes", None) or ErrorShapes()
    body = shapes.body(request.url.path, status, message, details)
    return Response(body, status, headers=headers, media_type="application/json")


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    error = from_validation(list(exc.errors()))
    return _shaped(request, STATUS[error.kind], error.message, error.details)


async def _service(request: Request, exc: ServiceError) -> Response:
    headers = {"www-authenticate": "Bearer"} if exc.kind is Kind.UNAUTHORIZED else None
    return _shaped(request, STATUS[exc.kind], exc.message, exc.details, headers)


async def _http(request: Request, exc: HTTPException) -> Response:
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":  # no route: say which path
        path = request.url.path
        message = f"no such path {path!r}"
        bare = path.rstrip("/")
        if bare and bare != path:
            message += f"; did you mean {bare!r}?"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path!r}"
        if exc.headers and "Allow" in exc.headers:
            message += f"; use {exc.headers['Allow']}"
    return _shaped(request, exc.status_code, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        extra={FIELDS: {"request_id": getattr(request.state, "request_id", None)}},
    )
    return _shaped(request, 500, INTERNAL)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ServiceError, _service)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
