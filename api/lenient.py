"""JSON as Python's json module writes it, for protocols whose clients send NaN.

tritonclient and MLflow's clients encode a missing number as the bare literal ``NaN`` (and
infinities as ``Infinity``), which strict JSON parsers refuse. Bodies are parsed with orjson,
and only when that fails with the standard library, which takes those literals. A NaN then
means missing, as in pandas; an infinity stays one, for the validator to refuse.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from api.problems import Kind, ServiceError


def loads(body: bytes) -> Any:
    """The JSON value of ``body``, NaN and Infinity literals allowed; MALFORMED otherwise."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ServiceError(Kind.MALFORMED, f"request body is not valid JSON: {exc}") from None


def missing(value: Any) -> Any:
    """None for a NaN, the value otherwise."""
    return None if isinstance(value, float) and math.isnan(value) else value
