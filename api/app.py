"""The application factory: create_app(settings) wires store, strategy, core, routes, errors."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from api import errors, rest, schemas
from api.batching import Batcher
from api.core import PredictCore
from api.fastpath import FastPredict
from api.middleware import RequestContext
from api.resolver import resolve
from api.routing import DEFAULT_VARIANT, Single
from api.settings import Settings
from api.store import ModelStore, load_model

log = logging.getLogger("lockserve.app")


def build_store(settings: Settings) -> ModelStore:
    """Resolve, verify and load the model dvc.lock pins at ``settings.rev``."""
    resolved = resolve(
        settings.repo,
        settings.rev,
        settings.artifact,
        settings.remote,
        settings.fetch_attempts,
        settings.fetch_backoff_s,
    )
    return ModelStore({DEFAULT_VARIANT: load_model(DEFAULT_VARIANT, resolved, settings.backend)})


def batchers_for(store: ModelStore, settings: Settings) -> dict[str, Batcher]:
    """An adaptive batcher per variant whose backend gains from one (or when forced on)."""
    out = {}
    for name in store.variants():
        backend = store.get(name).backend
        wanted = settings.batching or ("on" if backend.name == "sklearn" else "off")
        if wanted == "on":
            out[name] = Batcher(
                backend.predict_proba, settings.max_batch_size, settings.max_latency_ms / 1000
            )
    return out


def _openapi_with(app: FastAPI, request_model: type) -> dict[str, Any]:
    """FastAPI's schema plus the generated request model (the /predict body is read raw)."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)
        _, defs = models_json_schema(
            [(request_model, "validation")], ref_template="#/components/schemas/{model}"
        )
        spec.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = spec
    return app.openapi_schema


class LockserveApp(FastAPI):
    """FastAPI with lockserve's own ASGI layers outermost.

    Every HTTP request passes the request context (id, body checks, access log) and, when on,
    the thin /predict handler before Starlette's middleware stack and router, so a prediction
    does not pay for routing it does not use.
    """

    def wrap(self, settings: Settings, core: PredictCore) -> None:
        inner: Any = super().__call__
        if settings.fast_path:
            inner = FastPredict(inner, core)
        self._entry = RequestContext(inner, max_body_bytes=settings.max_body_bytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings, store: ModelStore | None = None) -> FastAPI:
    """Build the service. Without ``store`` the pinned model is resolved now (may raise)."""
    store = store if store is not None else build_store(settings)
    strategy = Single()
    primary = store.get(strategy.choose(None))
    request_model, response_model = schemas.build(
        primary.artifact.schema, primary.backend.classes, settings.max_batch
    )
    core = PredictCore(store, strategy, request_model, batchers_for(store, settings))
    app = LockserveApp(
        title="lockserve",
        summary="Serves exactly the model that dvc.lock pins",
        description=(
            f"Artifact `{primary.resolved.name}` md5 `{primary.md5}` "
            f"pinned at `{primary.resolved.rev}` ({primary.resolved.commit[:12]}), "
            f"{primary.backend.name} backend."
        ),
        version="0.1.0",
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.openapi = lambda: _openapi_with(app, request_model)  # type: ignore[method-assign]
    errors.install(app)
    app.include_router(rest.router(core, request_model, response_model))
    app.wrap(settings, core)
    app.state.store = store
    app.state.core = core
    return app
