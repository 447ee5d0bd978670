"""Model store: variant name -> a verified, loaded model, filled by the resolver."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from api import artifact
from api.logs import FIELDS
from api.predictor import SklearnPredictor
from api.resolver import ResolutionError, Resolved

log = logging.getLogger("lockserve.store")


@dataclass(frozen=True)
class ServedModel:
    """One variant: what dvc.lock pinned, where the bytes came from, and the loaded predictor."""

    variant: str
    resolved: Resolved
    artifact: artifact.Artifact
    predictor: SklearnPredictor
    load_ms: float = 0.0

    @property
    def md5(self) -> str:
        return self.resolved.md5

    def describe(self) -> dict[str, Any]:
        """What GET /model reports for this variant."""
        meta = self.artifact.metadata
        return {
            "variant": self.variant,
            "name": self.resolved.name,
            "path": self.resolved.path,
            "md5": self.resolved.md5,
            "rev": self.resolved.rev,
            "commit": self.resolved.commit,
            "source": self.resolved.source,
            "startup_ms": {**self.resolved.timings_ms, "load_ms": self.load_ms},
            "backend": self.predictor.backend,
            "estimator": meta.get("estimator"),
            "classes": self.predictor.classes,
            "params": meta.get("params", {}),
            "metrics": self.resolved.metrics,
            "libraries": meta.get("libraries", {}),
            "input_schema": self.artifact.schema,
        }


def load_model(variant: str, resolved: Resolved) -> ServedModel:
    """Deserialise verified bytes into a ServedModel (the md5 is checked once more first)."""
    started = time.perf_counter()
    try:
        loaded = artifact.load(resolved.data, resolved.md5)
    except artifact.ArtifactError as exc:
        raise ResolutionError(f"{resolved.path} md5 {resolved.md5}: {exc}") from None
    predictor = SklearnPredictor(loaded.predictor, loaded.schema)
    load_ms = (time.perf_counter() - started) * 1000
    log.info(
        "loaded variant %s: %s md5 %s",
        variant,
        resolved.name,
        resolved.md5,
        extra={
            FIELDS: {
                "variant": variant,
                "md5": resolved.md5,
                "load_ms": round(load_ms, 1),
                "backend": predictor.backend,
            }
        },
    )
    return ServedModel(variant, resolved, loaded, predictor, load_ms)


class ModelStore:
    """Variant name -> ServedModel. The single strategy uses one variant, ``default``."""

    def __init__(self, models: dict[str, ServedModel] | None = None) -> None:
        self._models: dict[str, ServedModel] = dict(models or {})

    def add(self, model: ServedModel) -> None:
        self._models[model.variant] = model

    def get(self, variant: str) -> ServedModel:
        return self._models[variant]

    def variants(self) -> list[str]:
        return list(self._models)

    @property
    def ready(self) -> bool:
        return bool(self._models)
