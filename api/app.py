"""The application factory: create_app(settings) wires store, strategy, routes and errors."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import errors, rest, schemas
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
    return ModelStore({DEFAULT_VARIANT: load_model(DEFAULT_VARIANT, resolved)})


def create_app(settings: Settings, store: ModelStore | None = None) -> FastAPI:
    """Build the service. Without ``store`` the pinned model is resolved now (may raise)."""
    store = store if store is not None else build_store(settings)
    strategy = Single()
    primary = store.get(strategy.choose(None))
    request_model, response_model = schemas.build(
        primary.artifact.schema, primary.predictor.classes, settings.max_batch
    )
    app = FastAPI(
        title="lockserve",
        summary="Serves exactly the model that dvc.lock pins",
        description=(
            f"Artifact `{primary.resolved.name}` md5 `{primary.md5}` "
            f"pinned at `{primary.resolved.rev}` ({primary.resolved.commit[:12]})."
        ),
        version="0.1.0",
    )
    errors.install(app)
    app.include_router(rest.router(store, strategy, request_model, response_model))
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    app.state.store = store
    return app
