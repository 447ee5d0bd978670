"""MLflow's scoring protocol: ``POST /invocations``, ``GET /ping``, ``/health``, ``/version``.

A JSON body holds exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (``params`` is accepted and ignored: the model takes none; NaN is a missing value);
``text/csv`` is a table with a header row. The answer is ``{"predictions": [...]}``, a label
per row for a classifier and a value per row for a regressor, as MLflow's pyfunc server
answers for an sklearn model; ``X-Model-Md5`` and ``X-Model-Variant`` name the bytes that
answered. Errors are ``{"error_code", "message"}`` (``BAD_REQUEST`` with 400 for what the
input schema refuses), and an unsupported content type is a 415 in plain text, as MLflow does.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response

from api import lenient
from api.core import Core
from api.problems import Kind, ServiceError
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
ERRORS = {
    Kind.MALFORMED: (400, "BAD_REQUEST"),
    Kind.INVALID: (400, "BAD_REQUEST"),
    Kind.NOT_FOUND: (404, "RESOURCE_DOES_NOT_EXIST"),
    Kind.CONFLICT: (409, "RESOURCE_ALREADY_EXISTS"),
    Kind.TOO_LARGE: (413, "REQUEST_LIMIT_EXCEEDED"),
    Kind.UNAVAILABLE: (503, "TEMPORARILY_UNAVAILABLE"),
    Kind.INTERNAL: (500, "INTERNAL_ERROR"),
}
REQUIRED = f"The input must be a JSON dictionary with exactly one of the input fields {FORMATS}"


def _bad(message: str) -> ServiceError:
    return ServiceError(Kind.INVALID, message)


def _records(value: Any, key: str) -> list[dict[str, Any]]:
    """Instances from one of the four JSON formats."""
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list):
            raise _bad("dataframe_split: an object with columns and data is expected")
        columns, data = value["columns"], value.get("data")
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise _bad("dataframe_split: data must be a list of rows (lists)")
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise _bad(f"dataframe_split: row {i} has {len(row)} values, not {len(columns)}")
        return [dict(zip(columns, row, strict=True)) for row in data]
    if isinstance(value, dict) and key in ("instances", "inputs"):  # columns: name -> values
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if -1 in lengths or len(lengths) != 1:
            raise _bad(f"{key}: as columns, every value must be a list of the same length")
        names = list(value)
        return [dict(zip(names, row, strict=True)) for row in zip(*value.values(), strict=True)]
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise _bad(f"{key}: a list of records (objects by column name) is expected")
    return value


def instances_from_json(body: bytes) -> list[dict[str, Any]]:
    decoded = lenient.loads(body)
    if not isinstance(decoded, dict):
        raise _bad(f"{REQUIRED}. Received {type(decoded).__name__}.")
    keys = [k for k in decoded if k in FORMATS]
    if len(keys) != 1:
        raise _bad(f"{REQUIRED}. Received dictionary with input fields: {list(decoded)}")
    records = _records(decoded[keys[0]], keys[0])
    return [{k: lenient.missing(v) for k, v in r.items()} for r in records]


def instances_from_csv(body: bytes, numbers: set[str]) -> list[dict[str, Any]]:
    """A CSV table with a header row; empty cells are missing, number columns parsed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError(Kind.MALFORMED, "CSV body is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise _bad("CSV body has no header row")
    out = []
    for i, row in enumerate(reader):
        if len(row) != len(header):
            raise _bad(f"CSV row {i + 1} has {len(row)} values, not {len(header)}")
        record: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=True):
            if cell == "":
                record[name] = None
            elif name in numbers:
                try:
                    record[name] = float(cell)
                except ValueError:
                    record[name] = cell  # the validator names the field
            else:
                record[name] = cell
        out.append(record)
    return out


def _error(error: ServiceError) -> Response:
    status, code = ERRORS[error.kind]
    body = {"error_code": code, "message": error.message}
    return Response(orjson.dumps(body), status, media_type="application/json")


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add MLflow's scoring routes."""
    api = APIRouter(tags=["MLflow scoring protocol"])
    numbers = {f.name for f in core.schema.features if f.type == "number"}

    @api.get("/ping", summary="MLflow health check")
    @api.get("/health", summary="MLflow health check")
    def ping() -> Response:
        return Response("\n", 200 if core.ready else 503, media_type="application/json")

    @api.get("/version", summary="Server version (MLflow clients read it as text)")
    def version() -> Response:
        return Response(app.version, media_type="application/json")

    @api.post("/invocations", summary="MLflow scoring: JSON (four formats) or CSV")
    async def invocations(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        media, *options = [p.strip() for p in content_type.split(";")]
        charset = dict(o.partition("=")[::2] for o in options).get("charset", "utf-8").lower()
        if media.lower() not in ("application/json", "text/csv") or charset != "utf-8":
            return Response(
                "This predictor only supports the following content types: "
                f"application/json, text/csv (UTF-8). Got '{content_type}'.",
                415,
                media_type="text/plain",
            )
        state = request.state._state
        try:
            body = await request.body()
            if media.lower() == "text/csv":
                instances = instances_from_csv(body, numbers)
            else:
                instances = instances_from_json(body)
            if not instances:
                raise _bad("the input has no rows")
            answer = await core.predict(
                core.rows_of(instances),
                request.headers.get("x-routing-key"),
                state.get("request_id"),
                None,
                state,
            )
        except ServiceError as exc:
            return _error(exc)
        return Response(
            orjson.dumps({"predictions": answer.answered}),
            media_type="application/json",
            headers={"X-Model-Md5": answer.model.md5, "X-Model-Variant": answer.model.variant},
        )

    app.include_router(api)
