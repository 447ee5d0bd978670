"""Unit: the prediction core: one validation, the strategy's variant, its backend (batched,
or off the event loop), the answer naming the model, and what learning strategies and shadows
are handed."""

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import BaseModel

from api.core import PredictCore
from api.errors import ApiError


class Instance(BaseModel):
    island: str
    mass: float | None


class Request(BaseModel):
    instances: list[Instance]


@dataclass
class Backend:
    name: str
    task: str = "classification"
    classes: list[Any] = field(default_factory=lambda: ["Adelie", "Gentoo"])
    calls: list = field(default_factory=list)

    def predict(self, rows):
        self.calls.append((list(rows), threading.current_thread()))
        if self.task == "regression":
            return np.array([float(len(r[0])) for r in rows])
        return np.array([[0.2, 0.8] if r[0] == "Biscoe" else [0.9, 0.1] for r in rows])


@dataclass
class Model:
    variant: str
    backend: Backend

    @property
    def md5(self) -> str:
        return f"md5-{self.variant}"

    @property
    def ref(self) -> dict:
        return {"variant": self.variant, "md5": self.md5}


class Store:
    def __init__(self, *models: Model) -> None:
        self.models = {m.variant: m for m in models}

    def get(self, variant: str) -> Model:
        return self.models[variant]


class Route:
    """A strategy that sends every request to ``to`` and records the routing keys."""

    name = "route"

    def __init__(self, to: str, shadows: list[str] | None = None) -> None:
        self.primary, self.to, self.shadows = to, to, shadows or []
        self.keys: list = []

    def choose(self, routing_key):
        self.keys.append(routing_key)
        return self.to


class Learning(Route):
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.seen: list = []

    def observe(self, request_id, variant, answered):
        self.seen.append((request_id, variant, answered))


class Batcher:
    def __init__(self, backend: Backend) -> None:
        self.backend, self.submitted = backend, []

    async def submit(self, rows):
        self.submitted.append(rows)
        return self.backend.predict(rows)


class Shadows:
    def __init__(self) -> None:
        self.submitted: list = []

    def submit(self, variant, instances, request_id, answered):
        self.submitted.append((variant, instances, request_id, answered))


BODY = orjson.dumps(
    {"instances": [{"mass": 5200.0, "island": "Biscoe"}, {"island": "Dream", "mass": None}]}
)
ROWS = [("Biscoe", 5200.0), ("Dream", None)]


def predict(core: PredictCore, body: bytes = BODY, key: str | None = None, rid="req-1"):
    state = {"request_id": rid}
    answer = asyncio.run(core.predict(body, key, state))
    return orjson.loads(answer), state


def test_instances_become_rows_in_schema_order():
    core = PredictCore(Store(Model("a", Backend("onnx"))), Route("a"), Request)
    assert core.validate(BODY) == ROWS


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b'{"instances": [{"island": 3}]}', 422), (b"[]", 422)],
)
def test_a_bad_body_is_refused_before_any_model_runs(body, status):
    backend = Backend("onnx")
    strategy = Route("a")
    core = PredictCore(Store(Model("a", backend)), strategy, Request)
    with pytest.raises(ApiError) as err:
        predict(core, body)
    assert err.value.status == status
    assert backend.calls == [] and strategy.keys == []


def test_the_chosen_variant_answers_labels_and_probabilities_and_names_itself():
    backend = Backend("onnx")
    strategy = Route("b")
    core = PredictCore(Store(Model("a", Backend("onnx")), Model("b", backend)), strategy, Request)
    answer, state = predict(core, key="user-7")
    assert strategy.keys == ["user-7"]
    assert answer == {
        "predictions": [
            {"label": "Gentoo", "probabilities": {"Adelie": 0.2, "Gentoo": 0.8}},
            {"label": "Adelie", "probabilities": {"Adelie": 0.9, "Gentoo": 0.1}},
        ],
        "model": {"variant": "b", "md5": "md5-b"},
    }
    assert [rows for rows, _ in backend.calls] == [ROWS]
    assert state == {"request_id": "req-1", "batch_size": 2, "variant": "b", "model_md5": "md5-b"}


def test_a_regressor_answers_values():
    core = PredictCore(Store(Model("a", Backend("onnx", "regression", []))), Route("a"), Request)
    answer, _ = predict(core)
    assert answer["predictions"] == [{"value": 6.0}, {"value": 5.0}]


def test_a_variant_with_a_batcher_goes_through_it_and_others_do_not():
    batched, direct = Backend("sklearn"), Backend("sklearn")
    batcher = Batcher(batched)
    store = Store(Model("a", batched), Model("b", direct))
    predict(PredictCore(store, Route("a"), Request, {"a": batcher}))
    assert batcher.submitted == [ROWS]
    predict(PredictCore(store, Route("b"), Request, {"a": batcher}))
    assert batcher.submitted == [ROWS] and [rows for rows, _ in direct.calls] == [ROWS]


def test_an_unbatched_sklearn_model_runs_off_the_event_loop_thread():
    backend = Backend("sklearn")
    core = PredictCore(Store(Model("a", backend)), Route("a"), Request)
    answer, _ = predict(core)
    assert answer["predictions"][0]["label"] == "Gentoo"
    ((rows, thread),) = backend.calls
    assert rows == ROWS and thread is not threading.main_thread()


def test_a_learning_strategy_is_told_who_answered_what():
    strategy = Learning("a")
    core = PredictCore(Store(Model("a", Backend("onnx"))), strategy, Request)
    predict(core, rid="req-9")
    assert strategy.seen == [("req-9", "a", ["Gentoo", "Adelie"])]


def test_each_shadow_gets_the_rows_and_the_answer():
    shadows = Shadows()
    store = Store(*(Model(v, Backend("onnx")) for v in ("p", "s1", "s2")))
    core = PredictCore(store, Route("p", ["s1", "s2"]), Request, shadow=shadows)
    answer, _ = predict(core, rid="req-3")
    assert answer["model"]["variant"] == "p"
    assert shadows.submitted == [
        ("s1", ROWS, "req-3", ["Gentoo", "Adelie"]),
        ("s2", ROWS, "req-3", ["Gentoo", "Adelie"]),
    ]
    assert store.get("s1").backend.calls == []  # scored later, by the shadow runner


def test_no_shadow_is_submitted_when_the_strategy_has_none():
    shadows = Shadows()
    core = PredictCore(Store(Model("a", Backend("onnx"))), Route("a"), Request, shadow=shadows)
    predict(core)
    assert shadows.submitted == []


def test_an_onnx_model_runs_inline_on_the_event_loop_thread():
    backend = Backend("onnx")
    predict(PredictCore(Store(Model("a", backend)), Route("a"), Request))
    ((rows, thread),) = backend.calls
    assert rows == ROWS and thread is threading.main_thread()


def test_a_core_without_a_shadow_runner_answers_though_the_strategy_names_shadows():
    store = Store(*(Model(v, Backend("onnx")) for v in ("p", "s1")))
    answer, _ = predict(PredictCore(store, Route("p", ["s1"]), Request))
    assert answer["model"]["variant"] == "p"
