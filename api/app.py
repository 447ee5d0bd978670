"""The application factory: create_app(settings) wires store, strategy, runners, core, every
protocol adapter, errors, and the lifespan that starts and stops what runs in the background."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from api import (
    bundle,
    errors,
    lookup,
    middleware,
    protocols,
    runners,
    schemas,
    serving,
    strategies,
)
from api.core import Core
from api.logs import FIELDS
from api.middleware import RequestContext
from api.resolver import ResolutionError, Resolved, ResolvedData, resolve, resolve_path
from api.settings import Settings
from api.shadowing import ShadowRunner
from api.store import ModelStore, ServedModel, load_model
from api.strategies.single import Single

log = logging.getLogger("lockserve.app")


@dataclass(frozen=True)
class Verified:
    """What serving.yaml pins, resolved and verified: the config and the bytes of every
    variant's model (and of the lookup table), not yet loaded. An app built from it needs
    neither the repository nor the remote (a worker rebuilding its app on a reload)."""

    config: serving.ServingConfig
    models: dict[str, Resolved]
    lookup: ResolvedData | None = None


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


def _verified(settings: Settings, variant: serving.Variant) -> Resolved:
    """The variant's verified bytes: from LOCKSERVE_BUNDLE when set, else by the resolver."""
    if settings.bundle is not None:
        return bundle.read(settings.bundle, settings.bundle_md5)
    return resolve(
        settings.repo,
        variant.rev,
        settings.artifact,
        settings.remote,
        settings.fetch_attempts,
        settings.fetch_backoff_s,
    )


def build_store(
    settings: Settings,
    config: serving.ServingConfig,
    verified: dict[str, Resolved] | None = None,
) -> ModelStore:
    """Resolve, verify and load every variant's model, each by the same resolver (or, with
    LOCKSERVE_BUNDLE, the one packaged model, verified as it is read); given ``verified``
    bytes, load those (their md5 checked once more as they load)."""
    store = ModelStore()
    if settings.bundle is not None and verified is None:
        if len(config.variants) != 1:
            raise ResolutionError(
                f"LOCKSERVE_BUNDLE holds one model; {settings.serving_file} names "
                f"{len(config.variants)} variants"
            )
        asked = {"LOCKSERVE_REV": settings.rev, "LOCKSERVE_ARTIFACT": settings.artifact}
        for name, value in asked.items():
            if value is not None:
                raise ResolutionError(
                    f"LOCKSERVE_BUNDLE serves the model it holds; {name}={value} asks for "
                    "another: unset one of them"
                )
    for name, variant in config.variants.items():
        try:
            got = verified[name] if verified is not None else _verified(settings, variant)
            store.add(load_model(name, got, settings.backend))
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


def build_lookup(
    settings: Settings,
    config: serving.ServingConfig,
    primary: ServedModel,
    verified: ResolvedData | None = None,
) -> lookup.Table | None:
    """The verified table of precomputed answers serving.yaml's ``lookup`` names, if any
    (at its own rev, else the primary variant's; or the ``verified`` bytes given); a warning
    when another model scored it."""
    if config.lookup is None:
        return None
    if settings.bundle is not None and verified is None:
        raise ResolutionError(
            f"{settings.serving_file}: lookup needs the repository that pins "
            f"{config.lookup.path}; LOCKSERVE_BUNDLE serves a model only"
        )
    rev = config.lookup.rev or primary.resolved.rev
    try:
        resolved = verified or resolve_path(
            settings.repo,
            rev,
            config.lookup.path,
            settings.remote,
            settings.fetch_attempts,
            settings.fetch_backoff_s,
        )
        table = lookup.load(resolved, config.lookup.key)
    except ResolutionError as exc:
        raise ResolutionError(f"lookup: {exc}") from None
    if table.model["md5"] != primary.md5:
        log.warning(
            "lookup table %s (%s) was scored by model %s; /predict answers with %s (%s): "
            "the two may disagree",
            resolved.path,
            resolved.rev,
            table.model["md5"],
            primary.md5,
            primary.resolved.rev,
            extra={FIELDS: {"table_model_md5": table.model["md5"], "md5": primary.md5}},
        )
    return table


def runners_for(store: ModelStore, settings: Settings) -> dict[str, runners.Runner]:
    """One runner per variant: the settings' choice, else the one its backend asks for."""
    return {
        name: runners.build(
            store.get(name).backend,
            name,
            settings.runner,
            settings.max_batch_size,
            settings.max_latency_ms,
            settings.threads,
        )
        for name in store.variants()
    }


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


class Service(Protocol):
    """Something an adapter runs beside the HTTP app (a gRPC server), for the lifespan."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LockserveApp(FastAPI):
    """FastAPI with lockserve's own ASGI layers outermost.

    Every HTTP request passes the request context (id, body limit, access log) and then any
    handler an adapter puts in front of the router (the thin /predict handler), so a
    prediction does not pay for routing it does not use. Adapters also hand the app the
    services they run beside it (the lifespan starts them after the core and stops them
    first) and the shape of the errors on their paths.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services: list[Service] = []
        self.fronts: list[Callable[[Any], Any]] = []
        self.error_shapes = errors.ErrorShapes()

    def wrap(self, settings: Settings) -> None:
        inner: Any = super().__call__
        for front in self.fronts:
            inner = front(inner)
        self._entry = RequestContext(inner, settings.max_body_bytes, self.error_shapes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def release_replaced() -> None:
    """Let go of apps a reload replaced: FastAPI keeps, per endpoint function it has classified,
    an entry in bounded caches (fastapi.dependencies.models, 4,096 each), and through the
    endpoints' closures every app built before, with its models. A master that rebuilds the
    app on each reload clears them first, so its memory (and its new workers') stays flat."""
    from fastapi.dependencies import models

    for value in vars(models).values():
        if hasattr(value, "cache_clear"):  # functools.lru_cache
            value.cache_clear()
    gc.collect()


def create_app(
    settings: Settings,
    store: ModelStore | None = None,
    strategy: strategies.Strategy | None = None,
    verified: Verified | None = None,
) -> FastAPI:
    """Build the service. Without ``store`` the variants in serving.yaml are resolved now
    (or, given ``verified``, its config and bytes are loaded); ``app.state.verified`` keeps
    what was resolved.

    Raises ServingError for a bad serving.yaml and ResolutionError for a model that cannot be
    resolved and verified. A given ``store`` is served by ``strategy`` (single by default).
    """
    table, pinned = None, None
    if store is None:
        config = verified.config if verified is not None else serving_config(settings)
        store = build_store(settings, config, verified.models if verified else None)
        state_url = settings.state_url.get_secret_value() if settings.state_url else None
        strategy = strategies.build(config, settings.state_db, settings.feedback_ttl_s, state_url)
        table = build_lookup(
            settings, config, store.get(strategy.primary), verified.lookup if verified else None
        )
        pinned = Verified(
            config,
            {name: store.get(name).resolved for name in store.variants()},
            table.resolved if table is not None else None,
        )
    elif strategy is None:
        strategy = Single(store.variants()[0])
    primary = store.get(strategy.primary)
    request_model = schemas.build(primary.artifact.schema, settings.max_batch)[0]
    shadow = ShadowRunner(store) if strategy.shadows else None
    core = Core(store, strategy, request_model, runners_for(store, settings), shadow)

    @asynccontextmanager
    async def lifespan(app: LockserveApp) -> AsyncIterator[None]:
        await core.start()
        started: list[Service] = []
        try:
            for service in app.services:
                await service.start()
                started.append(service)
            yield
        finally:
            try:
                for service in reversed(started):
                    await service.stop()
                await core.stop()
            finally:
                middleware.flush()  # the last requests' counts and access lines

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
        lifespan=lifespan,
        redirect_slashes=False,  # /predict/ is not /predict: a 404 that says so, no redirect
        docs_url=None,  # served from local files by api/protocols/docs.py
        redoc_url=None,
    )
    app.openapi = lambda: _openapi_with(app, request_model)  # type: ignore[method-assign]
    errors.install(app)
    app.state.lookup = table
    for adapter in protocols.adapters():
        adapter.install(app, core, settings)
    app.wrap(settings)
    app.state.store = store
    app.state.core = core
    app.state.verified = pinned
    return app
