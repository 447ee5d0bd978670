"""REST protocol adapter: /predict, /health/live, /health/ready and /model.

Thin routes: /predict hands the raw body to the prediction core (api/core.py), which validates
it with the models generated from the artifact's schema; nothing here knows how a model was
resolved. When the fast path is on, POST /predict is answered in front of this router by the
same core, and this route is what /docs describes.
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import metrics
from api.core import PredictCore
from api.errors import ApiError, error_response
from api.shadowing import ShadowStats
from api.state import AlreadyRewarded, UnknownRequest
from contract.schema import Schema


class Feedback(BaseModel):
    """What happened after a prediction: a reward in [0, 1], or the true label(s)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    reward: float | None = Field(None, ge=0, le=1)
    label: str | int | list[str | int] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Feedback":
        if (self.reward is None) == (self.label is None):
            raise ValueError("send exactly one of reward or label")
        return self


def check_labels(schema: Schema, label: Any) -> list[Any]:
    """Feedback labels as a list, each one of the model's classes, or ApiError 422."""
    if schema.task != "classification":
        raise ApiError(422, f"this model predicts {schema.target} (a number): send a reward")
    labels = label if isinstance(label, list) else [label]
    allowed = list(schema.classes)
    unknown = [x for x in labels if x not in allowed or type(x) is not type(allowed[0])]
    if unknown:
        raise ApiError(
            422,
            f"label {unknown[0]!r} is not one of the model's classes: "
            + ", ".join(repr(c) for c in allowed),
        )
    return labels


def router(core: PredictCore, request_model: type, response_model: type) -> APIRouter:
    """Build the REST routes over the core's store and strategy."""
    api = APIRouter()
    store, strategy = core.store, core.strategy
    schema = store.get(strategy.primary).artifact.schema

    @api.post(
        "/predict",
        response_model=response_model,
        summary=f"Predict {schema.target} for one or more instances",
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
        payload = await core.predict(
            await request.body(), request.headers.get("x-routing-key"), request.state._state
        )
        return Response(payload, media_type="application/json")

    @api.post(
        "/feedback",
        summary="Credit the variant that answered a request (bandit strategy)",
        responses={
            404: {"description": "unknown or expired request id, or no bandit"},
            409: {"description": "feedback for this request was already counted"},
        },
    )
    def feedback(body: Feedback) -> dict[str, Any]:
        learner = getattr(strategy, "feedback", None)
        if learner is None:
            raise ApiError(404, f"strategy {strategy.name!r} takes no feedback")
        labels = None if body.label is None else check_labels(schema, body.label)
        try:
            variant, reward = learner(body.request_id, body.reward, labels)
        except UnknownRequest:
            raise ApiError(404, f"unknown or expired request id {body.request_id!r}") from None
        except AlreadyRewarded:
            raise ApiError(
                409, f"feedback for request {body.request_id!r} was already counted"
            ) from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return {"request_id": body.request_id, "variant": variant, "reward": reward}

    @api.get("/metrics", summary="Prometheus metrics of all workers", response_class=Response)
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
        if not store.ready:
            return error_response(503, "no verified model is loaded")
        return {"status": "ready", "variants": {v: store.get(v).md5 for v in store.variants()}}

    @api.get("/model", summary="Which model answers: md5, rev, params, metrics, input schema")
    def describe() -> dict[str, Any]:
        variants = []
        for name in store.variants():
            batcher = core.batchers.get(name)
            batching = {"enabled": batcher is not None}
            if batcher is not None:
                batching.update(
                    max_batch_size=batcher.max_size,
                    max_latency_ms=batcher.max_latency_s * 1000,
                    this_worker=batcher.stats.as_dict(),
                )
            entry = {**store.get(name).describe(), **strategy.describe(name), "batching": batching}
            if core.shadow is not None and name in strategy.shadows:
                entry["shadow_this_worker"] = core.shadow.stats.get(name, ShadowStats()).as_dict()
            variants.append(entry)
        first = next(v for v in variants if v["variant"] == strategy.primary)
        return {"strategy": strategy.name, **first, "variants": variants}

    return api
