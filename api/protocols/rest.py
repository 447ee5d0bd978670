"""lockserve's own JSON over HTTP: /predict, /feedback, /model, /metrics, /health/*.

Thin routes over the core (api/core.py). POST /predict is answered by :func:`predict_bytes`,
from the thin ASGI handler in front of the router (api/fastpath.py) when the fast path is on,
else from the route here, which is also what /docs describes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api import auth, metrics, schemas
from api.core import Core
from api.errors import error_response
from api.fastpath import FastPredict, not_json
from api.middleware import REQUEST_ID
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp


LABEL_SCHEMA = {
    "description": "the true class, or one per instance of the request",
    "anyOf": [
        {"type": "string"},
        {"type": "integer"},
        {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]}},
    ],
}


class Feedback(BaseModel):
    """What happened after a prediction: a reward in [0, 1], or the true label(s)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["reward"]}, {"required": ["label"]}]},
    )

    request_id: str = Field(pattern=REQUEST_ID.pattern)
    reward: float = Field(None, ge=0, le=1)  # type: ignore[assignment] - absent: None
    label: Any = Field(None, json_schema_extra=LABEL_SCHEMA)  # checked below in words

    @field_validator("label")
    @classmethod
    def _a_class_or_a_list(cls, value: Any) -> Any:
        def one(x: Any) -> bool:
            return isinstance(x, str | int) and not isinstance(x, bool)

        if one(value) or (isinstance(value, list) and value and all(map(one, value))):
            return value
        raise PydanticCustomError(
            "label", "give one of the model's classes, or a list of them (one per instance)"
        )

    @model_validator(mode="after")
    def _one_of(self) -> Feedback:
        if (self.reward is None) == (self.label is None):
            raise PydanticCustomError("one_of", "send exactly one of reward or label")
        return self


class UnsupportedMedia(Exception):
    """A body that is not JSON on a JSON endpoint."""


async def predict_bytes(
    core: Core, body: bytes, routing_key: str | None, state: dict[str, Any]
) -> bytes:
    """The /predict answer for a JSON body: predictions and the model that answered."""
    answer = await core.predict(core.rows(body), routing_key, state.get("request_id"), None, state)
    return orjson.dumps({"predictions": answer.predictions(), "model": answer.model.ref})


def _json_body(request: Request) -> None:
    """415 unless the body is declared JSON (a dependency of the JSON routes)."""
    given = request.headers.get("content-type")
    problem = not_json(given.encode("latin-1") if given else None)
    if problem is not None:
        raise UnsupportedMedia(problem)


def _token(setting: Any, what: str) -> Any:
    """A dependency that checks a request's bearer token against ``setting`` (if set)."""
    allowed = auth.tokens_of(setting.get_secret_value() if setting is not None else None)

    def check(request: Request) -> None:
        auth.check(allowed, request.headers.get("authorization"), what)

    return check


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add the REST routes and, when on, the thin /predict handler."""
    request_model = core.request_model
    response_model = schemas.response_model(core.schema)
    api = APIRouter()
    store, schema = core.store, core.schema

    @app.exception_handler(UnsupportedMedia)
    async def _unsupported(request: Request, exc: UnsupportedMedia) -> Response:
        return error_response(415, str(exc))

    @api.post(
        "/predict",
        response_model=response_model,
        summary=f"Predict {schema.target} for one or more instances",
        dependencies=[Depends(_json_body)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{request_model.__name__}"}
                    }
                },
            }
        },
        responses={
            400: {"description": "malformed JSON"},
            413: {"description": "body too large"},
            415: {"description": "not application/json"},
            422: {"description": "instances violate the model's input schema"},
        },
    )
    async def predict(request: Request) -> Response:
        payload = await predict_bytes(
            core, await request.body(), request.headers.get("x-routing-key"), request.state._state
        )
        return Response(payload, media_type="application/json")

    @api.post(
        "/feedback",
        summary="Credit the variant that answered a request (bandit strategy)",
        dependencies=[
            Depends(_token(settings.feedback_token, "POST /feedback")),
            Depends(_json_body),
        ],
        responses={
            400: {"description": "malformed JSON"},
            401: {"description": "no bearer token (when LOCKSERVE_FEEDBACK_TOKEN is set)"},
            403: {"description": "a token that is not allowed"},
            404: {"description": "unknown or expired request id, or no bandit"},
            413: {"description": "body too large"},
            415: {"description": "not application/json"},
            409: {"description": "feedback for this request was already counted"},
            503: {"description": "the state store (LOCKSERVE_STATE_URL) is unreachable"},
        },
    )
    def feedback(body: Feedback) -> dict[str, Any]:  # a worker thread: it may wait on SQLite
        return core.feedback(body.request_id, body.reward, body.label)

    @api.get(
        "/metrics",
        summary="Prometheus metrics of all workers",
        response_class=Response,
        dependencies=[Depends(_token(settings.metrics_token, "GET /metrics"))],
        responses={
            401: {"description": "no bearer token (when LOCKSERVE_METRICS_TOKEN is set)"},
            403: {"description": "a token that is not allowed"},
        },
    )
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @api.get("/health/live", summary="The process is up")
    def live() -> dict[str, str]:
        return {"status": "live"}

    @api.get(
        "/health/ready",
        summary="The pinned model is loaded and verified",
        responses={503: {"description": "not ready"}},
    )
    def ready() -> Any:
        if not core.ready:
            return error_response(503, "no verified model is loaded")
        return {"status": "ready", "variants": {v: store.get(v).md5 for v in store.variants()}}

    @api.get("/model", summary="Which model answers: md5, rev, params, metrics, input schema")
    def describe() -> dict[str, Any]:
        return core.describe()

    app.include_router(api)
    if settings.fast_path:
        app.fronts.append(lambda inner: FastPredict(inner, core, predict_bytes))
