"""REST protocol adapter: /predict, /health/live, /health/ready and /model.

Thin routes: /predict hands the raw body to the prediction core (api/core.py), which validates
it with the models generated from the artifact's schema; nothing here knows how a model was
resolved. When the fast path is on, POST /predict is answered in front of this router by the
same core, and this route is what /docs describes.
"""

from typing import Any

from fastapi import APIRouter, Request, Response

from api.core import PredictCore
from api.errors import error_response


def router(core: PredictCore, request_model: type, response_model: type) -> APIRouter:
    """Build the REST routes over the core's store and strategy."""
    api = APIRouter()
    store, strategy = core.store, core.strategy

    @api.post(
        "/predict",
        response_model=response_model,
        summary="Predict the species of one or more penguins",
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
        primary = store.get(strategy.choose(None))
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
            variants.append({**store.get(name).describe(), "batching": batching})
        first = next(v for v in variants if v["variant"] == primary.variant)
        return {"strategy": strategy.name, **first, "variants": variants}

    return api
