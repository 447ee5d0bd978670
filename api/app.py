"""The application factory: create_app(settings) wires store, strategy, core, routes, errors."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from api import errors, rest, schemas, serving, strategies
from api.batching import Batcher
from api.core import PredictCore
from api.fastpath import FastPredict
from api.middleware import RequestContext
from api.resolver import ResolutionError, resolve
from api.settings import Settings
from api.shadowing import ShadowRunner
from api.store import ModelStore, load_model
from api.strategies.single import Single


def serving_config(settings: Settings) -> serving.ServingConfig:
    """serving.yaml if present, else one variant; LOCKSERVE_REV overrides a single variant."""
    if settings.serving_file.exists():
        config = serving.load(settings.serving_file)
    else:
        config = serving.ServingConfig(
            variants={strategies.DEFAULT_VARIANT: serving.Variant(rev="workspace")}
        )
    if settings.rev is not None and config.strategy == "single":
        name = next(iter(config.variants))
        config.variants[name] = config.variants[name].model_copy(update={"rev": settings.rev})
    return config


def build_store(settings: Settings, config: serving.ServingConfig) -> ModelStore:
    """Resolve, verify and load every variant's model, each by the same resolver."""
    store = ModelStore()
    for name, variant in config.variants.items():
        try:
            resolved = resolve(
                settings.repo,
                variant.rev,
                settings.artifact,
                settings.remote,
                settings.fetch_attempts,
                settings.fetch_backoff_s,
            )
            store.add(load_model(name, resolved, settings.backend))
        except ResolutionError as exc:
            prefix = "" if len(config.variants) == 1 else f"variant {name!r}: "
            raise ResolutionError(f"{prefix}{exc}") from None
    first = store.get(store.variants()[0])
    for name in store.variants()[1:]:
        if store.get(name).artifact.schema != first.artifact.schema:
            raise ResolutionError(
                f"variant {name!r} takes a different input schema or task from {first.variant!r}"
            )
    return store


def batchers_for(store: ModelStore, settings: Settings) -> dict[str, Batcher]:
    """An adaptive batcher per variant whose backend gains from one (or when forced on)."""
    out = {}
    for name in store.variants():
        backend = store.get(name).backend
        wanted = settings.batching or ("on" if backend.name == "sklearn" else "off")
        if wanted == "on":
            out[name] = Batcher(
                backend.predict,
                settings.max_batch_size,
                settings.max_latency_ms / 1000,
                name,
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


def create_app(
    settings: Settings,
    store: ModelStore | None = None,
    strategy: strategies.Strategy | None = None,
) -> FastAPI:
    """Build the service. Without ``store`` the variants in serving.yaml are resolved now.

    Raises ServingError for a bad serving.yaml and ResolutionError for a model that cannot be
    resolved and verified. A given ``store`` is served by ``strategy`` (single by default).
    """
    if store is None:
        config = serving_config(settings)
        store = build_store(settings, config)
        strategy = strategies.build(config, settings.state_db, settings.feedback_ttl_s)
    elif strategy is None:
        strategy = Single(store.variants()[0])
    primary = store.get(strategy.primary)
    request_model, response_model = schemas.build(primary.artifact.schema, settings.max_batch)
    shadow = ShadowRunner(store) if strategy.shadows else None
    core = PredictCore(store, strategy, request_model, batchers_for(store, settings), shadow)
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
