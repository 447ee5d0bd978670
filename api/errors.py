"""Every error as JSON {"error": {"code", "message", "details"}} with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.logs import FIELDS

log = logging.getLogger("lockserve.errors")

CODES = {
    400: "malformed_json",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "not_ready",
}


class ApiError(Exception):
    """A request the service refuses: status, message and details for the JSON error body."""

    def __init__(self, status: int, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.details)


INTERNAL = "internal error; see the server log for this request id"


def error_body(status: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return {
        "error": {"code": CODES.get(status, "error"), "message": message, "details": details or []}
    }


def error_response(
    status: int, message: str, details: list[Any] | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, details), status_code=status, headers=headers)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as {instance, field, type, message}: which instance, which field."""
    details = []
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        detail: dict[str, Any] = {"type": err["type"], "message": err["msg"], "loc": loc}
        if len(loc) >= 2 and loc[0] == "instances" and isinstance(loc[1], int):
            detail["instance"] = loc[1]
            if len(loc) >= 3:
                detail["field"] = str(loc[2])
        elif loc:
            detail["field"] = str(loc[-1]) if not isinstance(loc[-1], int) else str(loc[0])
        details.append(detail)
    return details


def summary(details: list[dict[str, Any]]) -> str:
    """One line naming the first problems: 'instance 0, field x: message'."""
    parts = []
    for d in details[:3]:
        where = []
        if "instance" in d:
            where.append(f"instance {d['instance']}")
        if "field" in d:
            where.append(f"field '{d['field']}'")
        parts.append(f"{', '.join(where) or 'body'}: {d['message']}")
    more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
    return "; ".join(parts) + more


def from_validation(errors: list[dict[str, Any]]) -> ApiError:
    """400 for JSON that does not parse, else 422 naming each instance and field."""
    bad = next((e for e in errors if e["type"] == "json_invalid"), None)
    if bad is not None:
        reason = (bad.get("ctx") or {}).get("error", bad["msg"])
        return ApiError(400, f"request body is not valid JSON: {reason}")
    details = validation_details(errors)
    return ApiError(422, summary(details), details)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    error = from_validation(list(exc.errors()))
    return error_response(error.status, error.message, error.details)


async def _api(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.details)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        extra={FIELDS: {"request_id": getattr(request.state, "request_id", None)}},
    )
    return error_response(500, INTERNAL)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
