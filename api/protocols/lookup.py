"""Static serving over HTTP: answers computed ahead of time, looked up by key.

  GET  /predictions        which table is served (path, md5, rev), its key, rows, and the model
                           that scored it
  GET  /predictions/{key}  the stored answer for one key
  POST /predictions        {"keys": [...]}: the stored answers for many keys, in order; a key
                           the table lacks gets an ``error`` of its own

Every answer names the md5 of the model that produced it and the md5 of the table (both pinned
at a rev: api/lookup.py). Without serving.yaml's ``lookup`` these paths answer 404 saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from api.core import Core
from api.errors import STATUS, error_body, error_response
from api.fastpath import not_json, send_json
from api.lookup import ERROR, Table
from api.problems import from_validation
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp


INT64 = (-(2**63), 2**63 - 1)  # the widest integer a parquet key column holds


class Keys(BaseModel):
    """POST /predictions: the keys to look up."""

    model_config = ConfigDict(extra="forbid")

    keys: list[Any] = Field(
        min_length=1, json_schema_extra={"items": {"type": ["string", "integer"]}}
    )

    @field_validator("keys")
    @classmethod
    def _strings_or_integers(cls, keys: list[Any]) -> list[Any]:
        for i, key in enumerate(keys):
            whole = isinstance(key, int) and not isinstance(key, bool)
            if not (isinstance(key, str) or (whole and INT64[0] <= key <= INT64[1])):
                raise PydanticCustomError(
                    "key", f"keys[{i}] is {json.dumps(key)}: give a string or a 64-bit integer"
                )
        return keys


PREFIX = "/predictions/"


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add the lookup routes (answering 404 when serving.yaml has no ``lookup``)."""
    table: Table | None = getattr(app.state, "lookup", None)
    router = APIRouter(tags=["static serving"])
    off = f"static serving is off: {settings.serving_file} has no lookup section"
    # what every answer ends with, encoded once: `,"model":{...},"table":{...}}`
    refs = b""
    if table is not None:
        refs = b"," + orjson.dumps({"model": table.model, "table": table.ref})[1:]

    def unknown(key: str) -> str:
        assert table is not None
        return (
            f"no row with {table.key} = {key!r} in {table.resolved.path} (md5 {table.resolved.md5})"
        )

    @router.get(
        "/predictions",
        summary="The table of precomputed answers this server serves",
        responses={404: {"description": "static serving is off"}},
    )
    def describe() -> Response:
        if table is None:
            return error_response(404, off)
        return _json(table.describe())

    def one_bytes(key: str) -> tuple[int, bytes]:
        """GET /predictions/{key}: the status and JSON body."""
        if table is None:
            return 404, orjson.dumps(error_body(404, off))
        row = table.find(key)
        if row is None:
            return 404, orjson.dumps(error_body(404, unknown(key)))
        answer = table.answer(row)
        if ERROR in answer:
            message = (
                f"the row with {table.key} = {key!r} was refused when the table was scored: "
                f"{answer[ERROR]}"
            )
            return 422, orjson.dumps(
                error_body(422, message, [{"model": table.model, "table": table.ref}])
            )
        return 200, orjson.dumps(answer)[:-1] + refs

    @router.get(
        "/predictions/{key}",
        summary="The precomputed answer for one key",
        responses={
            404: {"description": "no such key, or static serving is off"},
            422: {"description": "the row was refused when the table was scored"},
        },
    )
    def one(key: str) -> Response:
        status, payload = one_bytes(key)
        return Response(payload, status_code=status, media_type="application/json")

    @router.post(
        "/predictions",
        summary="The precomputed answers for many keys, in order",
        responses={
            400: {"description": "the body is not valid JSON"},
            404: {"description": "static serving is off"},
            413: {"description": "more keys than LOCKSERVE_MAX_BATCH, or body too large"},
            415: {"description": "not application/json"},
            422: {"description": 'the body is not {"keys": [...]}'},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": Keys.model_json_schema()}},
            }
        },
    )
    async def many(request: Request) -> Response:
        if table is None:
            return error_response(404, off)
        problem = not_json(request.headers.get("content-type", "").encode("latin-1") or None)
        if problem is not None:
            return error_response(415, problem)
        try:
            asked = Keys.model_validate_json(await request.body())
        except ValidationError as exc:
            problem = from_validation(exc.errors())
            return error_response(STATUS[problem.kind], problem.message, problem.details)
        if len(asked.keys) > settings.max_batch:
            return error_response(
                413, f"{len(asked.keys)} keys in one request; at most {settings.max_batch}"
            )
        answers = []
        for key in asked.keys:
            row = table.find(str(key))
            answers.append(
                {"key": key, ERROR: unknown(str(key))} if row is None else table.answer(row)
            )
        return _json({"predictions": answers, "model": table.model, "table": table.ref})

    app.include_router(router)
    if settings.fast_path:
        app.fronts.append(lambda inner: FastLookup(inner, one_bytes))


class FastLookup:
    """ASGI middleware answering GET /predictions/{key} without FastAPI's router (the route
    above answers the same, and is what /docs describes)."""

    def __init__(self, app: Any, respond: Callable[[str], tuple[int, bytes]]) -> None:
        self.app, self.respond = app, respond

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        key = path[len(PREFIX) :]
        mine = scope["type"] == "http" and scope["method"] == "GET" and path.startswith(PREFIX)
        if not mine or not key or "/" in key:  # everything else: the router
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["route"] = "/predictions/{key}"
        await send_json(send, *self.respond(key))
