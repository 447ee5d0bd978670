"""The prediction core: request bytes -> one validation -> strategy -> backend -> JSON bytes.

Both ways in to /predict (the thin ASGI handler in api/fastpath.py and the FastAPI route in
api/rest.py) call :meth:`PredictCore.predict`, so there is one validator (pydantic-core, from
the JSON bytes in one pass) and one prediction path. Classification answers a label and class
probabilities per instance; regression a value.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.backends import answers
from api.batching import Batcher
from api.errors import from_validation
from api.shadowing import ShadowRunner
from api.store import ModelStore
from api.strategies import Strategy


class PredictCore:
    """Answers a /predict body for whichever variant the strategy picks."""

    def __init__(
        self,
        store: ModelStore,
        strategy: Strategy,
        request_model: type,
        batchers: dict[str, Batcher] | None = None,
        shadow: ShadowRunner | None = None,
    ) -> None:
        self.store = store
        self.strategy = strategy
        self._validate = request_model.model_validate_json
        self.batchers = batchers or {}
        self.shadow = shadow
        self._observe = getattr(strategy, "observe", None)  # strategies that learn

    def validate(self, body: bytes) -> list[tuple[Any, ...]]:
        """The request's instances as value tuples in schema order, or ApiError (400 malformed
        JSON, 422 schema violation)."""
        try:
            instances = self._validate(body).instances
        except ValidationError as exc:
            raise from_validation(exc.errors()) from None
        return [tuple(instance.__dict__.values()) for instance in instances]

    async def predict(self, body: bytes, routing_key: str | None, state: dict[str, Any]) -> bytes:
        """Response bytes for a /predict body; ``state`` receives what the access log needs."""
        rows = self.validate(body)
        variant = self.strategy.choose(routing_key)
        model = self.store.get(variant)
        backend = model.backend
        batcher = self.batchers.get(variant)
        if batcher is not None:
            output = await batcher.submit(rows)
        elif backend.name == "onnx":  # microseconds: no thread hop
            output = backend.predict(rows)
        else:
            output = await run_in_threadpool(backend.predict, rows)
        state["batch_size"] = len(rows)
        state["variant"] = variant
        state["model_md5"] = model.md5
        answered, predictions = answers(backend.task, backend.classes, output)
        if self._observe is not None:
            self._observe(state.get("request_id"), variant, answered)
        if self.shadow is not None and self.strategy.shadows:
            for name in self.strategy.shadows:
                self.shadow.submit(name, rows, state.get("request_id"), answered)
        return orjson.dumps({"predictions": predictions, "model": model.ref})
