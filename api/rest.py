"""REST protocol adapter: /predict, /health/live, /health/ready and /model.

(No postponed annotations here: FastAPI must see the generated request model itself.)

Thin routes: validation is the generated pydantic models, routing is the strategy, the work is
the predictor. Nothing here knows how a model was resolved.
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.errors import error_response
from api.routing import Strategy
from api.store import ModelStore


def router(
    store: ModelStore, strategy: Strategy, request_model: type, response_model: type
) -> APIRouter:
    """Build the REST routes over ``store``, letting ``strategy`` pick the variant."""
    api = APIRouter()

    # A sync route: FastAPI runs it in its thread pool, so prediction never blocks the loop.
    @api.post(
        "/predict",
        response_model=response_model,
        summary="Predict the species of one or more penguins",
        responses={
            400: {"description": "malformed JSON"},
            413: {"description": "body too large"},
            415: {"description": "not application/json"},
            422: {"description": "instances violate the model's input schema"},
        },
    )
    def predict(body: request_model, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        variant = strategy.choose(request.headers.get("x-routing-key"))
        model = store.get(variant)
        rows = [instance.__dict__ for instance in body.instances]
        predictions = model.predictor.predict(rows)
        request.state.batch_size = len(rows)
        request.state.variant = variant
        request.state.model_md5 = model.md5
        return JSONResponse(
            {
                "predictions": [
                    {"label": p.label, "probabilities": p.probabilities} for p in predictions
                ],
                "model": {
                    "variant": variant,
                    "name": model.resolved.name,
                    "md5": model.md5,
                    "rev": model.resolved.rev,
                },
            }
        )

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
        return {
            "strategy": strategy.name,
            **primary.describe(),
            "variants": [store.get(v).describe() for v in store.variants()],
        }

    return api
