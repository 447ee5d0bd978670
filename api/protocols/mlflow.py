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
import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from api import lenient
from api.core import Core
from api.logs import FIELDS
from api.problems import INTERNAL, Kind, ServiceError
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

log = logging.getLogger("lockserve.mlflow")

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
UTF8 = ("utf-8", "utf8")
_ERROR = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["error_code", "message"],
        }
    }
}
REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "exactly one of dataframe_split, dataframe_records, instances, "
                "inputs",
            }
        },
        "text/csv": {"schema": {"type": "string", "description": "a header row, then rows"}},
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one prediction per row",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"predictions": {"type": "array"}},
                    "required": ["predictions"],
                }
            }
        },
    },
    400: {
        "description": "rows the model cannot take, or a body that does not parse",
        "content": _ERROR,
    },
    413: {"description": "body too large", "content": _ERROR},
    415: {
        "description": "not JSON or CSV in UTF-8",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    503: {"description": "not ready", "content": _ERROR},
}
REQUIRED = f"The input must be a JSON dictionary with exactly one of the input fields {FORMATS}"


def _bad(message: str) -> ServiceError:
    return ServiceError(Kind.INVALID, message)


class DataframeSplit(BaseModel):
    model_config = ConfigDict(strict=True)

    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


Split = TypeAdapter(DataframeSplit)
Records = TypeAdapter(list[dict[str, Any]])
Columns = TypeAdapter(dict[str, list[Any]])
KINDS = {type(None): "null", list: "a list", str: "a string", bool: "a boolean"}


def _shape(adapter: Any, value: Any, key: str, expected: str) -> Any:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError:
        raise _bad(f"{key}: {expected} is expected") from None


def _records(value: Any, key: str) -> list[dict[str, Any]]:
    """Instances from one of the four JSON formats."""
    if key == "dataframe_split":
        split = _shape(Split, value, key, "an object with columns (names) and data (rows)")
        for i, row in enumerate(split.data):
            if len(row) != len(split.columns):
                raise _bad(
                    f"dataframe_split: row {i} has {len(row)} values, not {len(split.columns)}"
                )
        return [dict(zip(split.columns, row, strict=True)) for row in split.data]
    if isinstance(value, dict) and key in ("instances", "inputs"):  # columns: name -> values
        columns = _shape(Columns, value, key, "an object of columns (lists)")
        if len({len(v) for v in columns.values()}) > 1:
            raise _bad(f"{key}: as columns, every value must be a list of the same length")
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return _shape(Records, value, key, "a list of records (objects by column name)")


def instances_from_json(body: bytes) -> list[dict[str, Any]]:
    decoded = lenient.loads(body)
    if not isinstance(decoded, dict):
        kind = KINDS.get(type(decoded), "a number")
        raise _bad(f"{REQUIRED}. Received {kind}.")
    keys = [k for k in decoded if k in FORMATS]
    if len(keys) != 1:
        raise _bad(f"{REQUIRED}. Received dictionary with input fields: {list(decoded)}")
    records = _records(decoded[keys[0]], keys[0])
    return [{k: lenient.missing(v) for k, v in r.items()} for r in records]


# what pandas.read_csv (and so MLflow's server) reads as a missing value by default
MISSING = {
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
}


def instances_from_csv(body: bytes, numbers: set[str]) -> list[dict[str, Any]]:
    """A CSV table with a header row (a UTF-8 byte order mark allowed); the cells pandas reads
    as missing are missing, number columns parsed."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError(Kind.MALFORMED, "CSV body is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise _bad("CSV body has no header row")
        out = []
        for i, row in enumerate(reader):
            if len(row) != len(header):
                raise _bad(f"CSV row {i + 1} has {len(row)} values, not {len(header)}")
            record: dict[str, Any] = {}
            for name, cell in zip(header, row, strict=True):
                if cell in MISSING:
                    record[name] = None
                elif name in numbers:
                    try:
                        record[name] = float(cell)
                    except ValueError:
                        record[name] = cell  # the validator names the field
                else:
                    record[name] = cell
            out.append(record)
    except csv.Error as exc:
        raise ServiceError(Kind.MALFORMED, f"CSV body does not parse: {exc}") from None
    return out


PATHS = {"/invocations", "/ping", "/health", "/version"}
CODES = {status: code for status, code in ERRORS.values()} | {405: "BAD_REQUEST"}


def _shape_of_status(status: int, message: str) -> bytes:
    """An error MLflow's way, for what is refused before the route answers (size, method)."""
    return orjson.dumps({"error_code": CODES.get(status, "BAD_REQUEST"), "message": message})


def _error(error: ServiceError) -> Response:
    status, code = ERRORS[error.kind]
    body = {"error_code": code, "message": error.message}
    return Response(orjson.dumps(body), status, media_type="application/json")


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add MLflow's scoring routes."""
    api = APIRouter(tags=["MLflow scoring protocol"])
    app.error_shapes.add(lambda path: path in PATHS, _shape_of_status)
    numbers = {f.name for f in core.schema.features if f.type == "number"}

    @api.get("/ping", summary="MLflow health check")
    @api.get("/health", summary="MLflow health check")
    def ping() -> Response:
        return Response("\n", 200 if core.ready else 503, media_type="application/json")

    @api.get("/version", summary="Server version (MLflow clients read it as text)")
    def version() -> Response:
        return Response(app.version, media_type="application/json")

    @api.post(
        "/invocations",
        summary="MLflow scoring: JSON (four formats) or CSV",
        openapi_extra={"requestBody": REQUEST_BODY},
        responses=RESPONSES,
    )
    async def invocations(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        media, *options = [p.strip() for p in content_type.split(";")]
        charset = dict(o.partition("=")[::2] for o in options).get("charset", "utf-8")
        charset = charset.strip('"').lower()
        if media.lower() not in ("application/json", "text/csv") or charset not in UTF8:
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
        except Exception:  # noqa: BLE001 - never a trace in a response
            log.exception(
                "unhandled error on POST /invocations",
                extra={FIELDS: {"request_id": state.get("request_id")}},
            )
            return _error(ServiceError(Kind.INTERNAL, INTERNAL))
        return Response(
            orjson.dumps({"predictions": answer.answered}),
            media_type="application/json",
            headers={"X-Model-Md5": answer.model.md5, "X-Model-Variant": answer.model.variant},
        )

    app.include_router(api)
