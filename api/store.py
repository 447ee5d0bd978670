"""Model store: variant name -> a verified, loaded model, filled by the resolver."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from api import artifact, backends
from api.logs import FIELDS
from api.resolver import ResolutionError, Resolved

log = logging.getLogger("lockserve.store")


@dataclass(frozen=True)
class ServedModel:
    """One variant: what dvc.lock pinned, where the bytes came from, and its loaded backend."""

    variant: str
    resolved: Resolved
    artifact: artifact.Artifact
    backend: backends.Backend
    load_ms: float = 0.0

    @property
    def md5(self) -> str:
        return self.resolved.md5

    @property
    def ref(self) -> dict[str, str]:
        """What every response names: which pinned bytes answered."""
        return {
            "variant": self.variant,
            "name": self.resolved.name,
            "md5": self.resolved.md5,
            "rev": self.resolved.rev,
        }

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
            "backend": self.backend.name,
            "onnx_in_artifact": self.artifact.onnx is not None,
            "estimator": meta.get("estimator"),
            "task": self.backend.task,
            "target": self.artifact.schema.target,
            "classes": self.backend.classes,
            "params": meta.get("params", {}),
            "metrics": self.resolved.metrics,
            "libraries": meta.get("libraries", {}),
            "input_schema": self.artifact.schema.to_json(),
            "example": meta.get("example"),
        }


def load_model(variant: str, resolved: Resolved, backend: str = "onnx") -> ServedModel:
    """Deserialise verified bytes into a ServedModel (the md5 is checked once more first)."""
    started = time.perf_counter()
    try:
        loaded = artifact.load(resolved.data, resolved.md5)
    except artifact.ArtifactError as exc:
        raise ResolutionError(f"{resolved.path} md5 {resolved.md5}: {exc}") from None
    try:
        chosen = backends.select(loaded, backend)
    except Exception as exc:  # noqa: BLE001 - e.g. a pickle from other library versions
        raise ResolutionError(
            f"{resolved.path} md5 {resolved.md5} verified but could not be loaded "
            f"({type(exc).__name__}: {exc}); it was built with "
            f"{loaded.metadata.get('libraries', {})}"
        ) from None
    load_ms = (time.perf_counter() - started) * 1000
    log.info(
        "loaded variant %s: %s md5 %s (%s backend)",
        variant,
        resolved.name,
        resolved.md5,
        chosen.name,
        extra={
            FIELDS: {
                "variant": variant,
                "md5": resolved.md5,
                "load_ms": round(load_ms, 1),
                "backend": chosen.name,
            }
        },
    )
    return ServedModel(variant, resolved, loaded, chosen, load_ms)


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


def log_ready(store: ModelStore) -> None:
    """One line a variant: its md5, where the bytes came from, and each start-up step's time."""
    for variant in store.variants():
        served = store.get(variant)
        steps = {**served.resolved.timings_ms, "load_ms": served.load_ms}
        log.info(
            "model %s ready from %s: %s",
            served.md5,
            served.resolved.source,
            ", ".join(f"{k[:-3]} {v:.0f} ms" for k, v in steps.items()),
            extra={
                FIELDS: {
                    "variant": variant,
                    "md5": served.md5,
                    "source": served.resolved.source,
                    **{k: round(v, 1) for k, v in steps.items()},
                }
            },
        )
