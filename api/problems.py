"""What can go wrong with a request, in no protocol's terms: a kind, a message, details.

The prediction core raises :class:`ServiceError`; each protocol adapter maps the kind to its own
code (an HTTP status, a gRPC status code) and its own error body.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    MALFORMED = "malformed"  # the body does not parse (not JSON, not a tensor)
    INVALID = "invalid_input"  # it parses, but breaks the model's input schema or the protocol
    UNAUTHORIZED = "unauthorized"  # no credentials where they are required
    FORBIDDEN = "forbidden"  # credentials that do not allow this
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ServiceError(Exception):
    """A request the service refuses, with what a client needs to fix it."""

    def __init__(self, kind: Kind, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.details = kind, message, details or []


INTERNAL = "internal error; see the server log for this request id"


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
            where.append(f"field {d['field']!r}")  # repr: one line, whatever the name
        parts.append(f"{', '.join(where) or 'body'}: {d['message']}")
    more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
    return "; ".join(parts) + more


def from_validation(errors: list[dict[str, Any]]) -> ServiceError:
    """MALFORMED for JSON that does not parse, else INVALID naming each instance and field."""
    bad = next((e for e in errors if e["type"] == "json_invalid"), None)
    if bad is not None:
        reason = (bad.get("ctx") or {}).get("error", bad["msg"])
        return ServiceError(Kind.MALFORMED, f"request body is not valid JSON: {reason}")
    details = validation_details(errors)
    return ServiceError(Kind.INVALID, summary(details), details)
