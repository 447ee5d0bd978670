"""The protocol-neutral core: validated rows -> strategy -> runner -> backend -> an answer.

Every protocol adapter (api/protocols/) turns its request into rows for one validator (the
pydantic model generated from the artifact's schema: from JSON bytes in one pass, or from
Python values), calls :meth:`Core.predict`, and turns the :class:`Answer` into its own
response. Model metadata, readiness and feedback live here too; so does the lifecycle of what
runs in the background (runners, the shadow runner, the bandit's flush), which the app's
lifespan starts and stops. Nothing here knows HTTP or gRPC: refusals are
:class:`~api.problems.ServiceError` with a kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from api.backends import decide, predictions
from api.problems import Kind, ServiceError, from_validation, summary
from api.runners import Runner
from api.shadowing import ShadowRunner
from api.state import AlreadyRewarded, StoreUnavailable, UnknownRequest
from api.store import ModelStore, ServedModel
from api.strategies import Strategy
from contract.schema import Schema


@dataclass(frozen=True)
class Answer:
    """What answered a request and what it answered."""

    model: ServedModel
    output: np.ndarray  # probabilities (rows x classes) or values (rows)
    answered: list[Any]  # the label or value per row

    def predictions(self) -> list[dict[str, Any]]:
        """Per row {"label", "probabilities"} (classification) or {"value"} (regression)."""
        backend = self.model.backend
        return predictions(backend.task, backend.classes, self.output, self.answered)


def sparse_rows(schema: Schema, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """A detail for each row training would have dropped: more missing values (None) than the
    artifact's ``max_missing_features``."""
    limit = schema.max_missing_features
    if limit is None:
        return []
    n = len(schema.features)
    return [
        {
            "instance": i,
            "type": "max_missing_features",
            "message": f"{missing} of {n} feature values are missing; the model was trained "
            f"only on rows missing at most {limit} (max_missing_features)",
            "loc": ["instances", i],
        }
        for i, row in enumerate(rows)
        if (missing := row.count(None)) > limit
    ]


class Core:
    """Answers predictions, metadata, readiness and feedback for one deployment."""

    def __init__(
        self,
        store: ModelStore,
        strategy: Strategy,
        request_model: type,
        runners: dict[str, Runner],
        shadow: ShadowRunner | None = None,
    ) -> None:
        self.store = store
        self.strategy = strategy
        self.request_model = request_model
        self._from_json = request_model.model_validate_json
        self._from_python = request_model.model_validate
        self.runners = runners
        self.shadow = shadow
        self._observe = getattr(strategy, "observe", None)  # strategies that learn
        primary = store.get(strategy.primary)
        self.schema: Schema = primary.artifact.schema
        self.name: str = primary.resolved.name

    # -- lifecycle: the app's lifespan calls these once per worker process
    def _services(self) -> list[Any]:
        services: list[Any] = list(self.runners.values())
        if self.shadow is not None:
            services.append(self.shadow)
        if hasattr(self.strategy, "start"):
            services.append(self.strategy)
        return services

    async def start(self) -> None:
        """Start every variant's runner, the shadow runner and the strategy's background work."""
        for service in self._services():
            await service.start()

    async def stop(self) -> None:
        """Stop them in reverse order; the bandit writes its pending rows before it stops."""
        for service in reversed(self._services()):
            await service.stop()

    # -- predictions
    def rows(self, body: bytes) -> list[tuple[Any, ...]]:
        """A JSON body {"instances": [...]} as value tuples in schema order, or ServiceError."""
        try:
            instances = self._from_json(body).instances
        except ValidationError as exc:
            raise from_validation(exc.errors()) from None
        return self._trained_rows([tuple(instance.__dict__.values()) for instance in instances])

    def rows_of(self, instances: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Instances as Python dicts (feature name -> value), checked by the same validator."""
        try:
            validated = self._from_python({"instances": instances}).instances
        except ValidationError as exc:
            raise from_validation(exc.errors()) from None
        return self._trained_rows([tuple(instance.__dict__.values()) for instance in validated])

    def _trained_rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows``, unless one is a row training would have dropped (INVALID naming each)."""
        details = sparse_rows(self.schema, rows)
        if details:
            raise ServiceError(Kind.INVALID, summary(details), details)
        return rows

    def variant_of(self, version: str) -> str:
        """The variant whose model md5 is ``version``, or NOT_FOUND naming the served ones."""
        for name in self.store.variants():
            if self.store.get(name).md5 == version:
                return name
        served = ", ".join(self.store.get(n).md5 for n in self.store.variants())
        raise ServiceError(
            Kind.NOT_FOUND, f"model {self.name!r} has no version {version!r}; served: {served}"
        )

    async def predict(
        self,
        rows: list[tuple[Any, ...]],
        routing_key: str | None = None,
        request_id: str | None = None,
        version: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> Answer:
        """Answer validated rows with the variant the strategy picks (or the one ``version``
        names, which bypasses the strategy: no learning, no shadows). ``state`` receives what
        the access log needs."""
        chosen = version is None
        variant = self.strategy.choose(routing_key) if chosen else self.variant_of(version)
        model = self.store.get(variant)
        output = await self.runners[variant].run(rows)
        answered = decide(model.backend.task, model.backend.classes, output)
        if state is not None:
            state["batch_size"] = len(rows)
            state["variant"] = variant
            state["model_md5"] = model.md5
        if chosen:
            if self._observe is not None:
                self._observe(request_id, variant, answered)
            if self.shadow is not None:
                for name in self.strategy.shadows:
                    self.shadow.submit(name, rows, request_id, answered)
        return Answer(model, output, answered)

    # -- metadata and readiness
    @property
    def ready(self) -> bool:
        return self.store.ready

    def describe(self) -> dict[str, Any]:
        """Which models answer: the primary variant's description, then every variant's."""
        variants = []
        for name in self.store.variants():
            entry = {
                **self.store.get(name).describe(),
                **self.strategy.describe(name),
                "runner": self.runners[name].describe(),
            }
            if self.shadow is not None and name in self.strategy.shadows:
                entry["shadow_this_worker"] = self.shadow.describe(name)
            variants.append(entry)
        first = next(v for v in variants if v["variant"] == self.strategy.primary)
        return {"strategy": self.strategy.name, **first, "variants": variants}

    # -- feedback
    def check_labels(self, label: Any) -> list[Any]:
        """Feedback labels as a list, each one of the model's classes, or INVALID."""
        schema = self.schema
        if schema.task != "classification":
            raise ServiceError(
                Kind.INVALID, f"this model predicts {schema.target} (a number): send a reward"
            )
        labels = label if isinstance(label, list) else [label]
        allowed = list(schema.classes)
        unknown = [x for x in labels if x not in allowed or type(x) is not type(allowed[0])]
        if unknown:
            raise ServiceError(
                Kind.INVALID,
                f"label {unknown[0]!r} is not one of the model's classes: "
                + ", ".join(repr(c) for c in allowed),
            )
        return labels

    def feedback(self, request_id: str, reward: float | None, label: Any) -> dict[str, Any]:
        """Credit the variant that answered ``request_id`` (bandit strategy); blocking."""
        learner = getattr(self.strategy, "feedback", None)
        if learner is None:
            raise ServiceError(Kind.NOT_FOUND, f"strategy {self.strategy.name!r} takes no feedback")
        labels = None if label is None else self.check_labels(label)
        try:
            variant, credited = learner(request_id, reward, labels)
        except UnknownRequest:
            raise ServiceError(
                Kind.NOT_FOUND, f"unknown or expired request id {request_id!r}"
            ) from None
        except AlreadyRewarded:
            raise ServiceError(
                Kind.CONFLICT, f"feedback for request {request_id!r} was already counted"
            ) from None
        except ValueError as exc:
            raise ServiceError(Kind.INVALID, str(exc)) from None
        except StoreUnavailable as exc:
            raise ServiceError(Kind.UNAVAILABLE, str(exc)) from None
        return {"request_id": request_id, "variant": variant, "reward": credited}
