"""Unit: the protocol-neutral core: one validator (from JSON bytes or Python values), the
strategy's variant or the one a version names, that variant's runner, the answer naming the
model, what learning strategies and shadows are handed, feedback refusals as kinds, and the
lifecycle of what runs in the background."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import BaseModel, ConfigDict

from api.core import Core
from api.problems import Kind, ServiceError
from api.state import AlreadyRewarded, UnknownRequest
from contract.schema import Feature, Schema

SCHEMA = Schema(
    task="classification",
    target="species",
    features=(
        Feature("island", "category", False, ("Biscoe", "Dream")),
        Feature("mass", "number", True, (), 2000.0, 7000.0),
    ),
    classes=("Adelie", "Gentoo"),
)


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    island: str
    mass: float | None


class Request(BaseModel):
    instances: list[Instance]


@dataclass
class Backend:
    task: str = "classification"
    classes: list[Any] = field(default_factory=lambda: ["Adelie", "Gentoo"])

    def predict(self, rows):
        if self.task == "regression":
            return np.array([float(len(r[0])) for r in rows])
        return np.array([[0.2, 0.8] if r[0] == "Biscoe" else [0.9, 0.1] for r in rows])


@dataclass
class Artifact:
    schema: Schema = SCHEMA


@dataclass
class Resolved:
    name: str = "penguin-classifier"


@dataclass
class Model:
    variant: str
    backend: Backend = field(default_factory=Backend)
    artifact: Artifact = field(default_factory=Artifact)
    resolved: Resolved = field(default_factory=Resolved)

    @property
    def md5(self) -> str:
        return f"md5-{self.variant}"

    @property
    def ref(self) -> dict:
        return {"variant": self.variant, "md5": self.md5}

    def describe(self) -> dict:
        return {"variant": self.variant, "md5": self.md5}


class Store:
    def __init__(self, *models: Model) -> None:
        self.models = {m.variant: m for m in models}

    def get(self, variant: str) -> Model:
        return self.models[variant]

    def variants(self) -> list[str]:
        return list(self.models)

    @property
    def ready(self) -> bool:
        return bool(self.models)


class Route:
    """A strategy that sends every request to ``to`` and records the routing keys."""

    name = "route"

    def __init__(self, to: str, shadows: list[str] | None = None) -> None:
        self.primary, self.to, self.shadows = to, to, shadows or []
        self.keys: list = []

    def choose(self, routing_key):
        self.keys.append(routing_key)
        return self.to

    def describe(self, variant):
        return {"role": "primary" if variant == self.to else "other"}


class Learning(Route):
    def __init__(self, to: str, events: list | None = None, fails: Exception | None = None):
        super().__init__(to)
        self.seen: list = []
        self.events = events if events is not None else []
        self.fails = fails

    def observe(self, request_id, variant, answered):
        self.seen.append((request_id, variant, answered))

    def feedback(self, request_id, reward, labels):
        self.credited = (request_id, reward, labels)
        if self.fails is not None:
            raise self.fails
        return "a", 1.0 if reward is None else reward

    async def start(self):
        self.events.append("start strategy")

    async def stop(self):
        self.events.append("stop strategy")


class Runner:
    """Runs the variant's backend and records what it was given."""

    kind = "fake"

    def __init__(self, backend: Backend, name: str = "", events: list | None = None) -> None:
        self.backend, self.name, self.ran = backend, name, []
        self.events = events if events is not None else []

    async def run(self, rows):
        self.ran.append(rows)
        return self.backend.predict(rows)

    async def start(self):
        self.events.append(f"start {self.name}")

    async def stop(self):
        self.events.append(f"stop {self.name}")

    def describe(self):
        return {"runner": self.kind}


class Shadows:
    def __init__(self, events: list | None = None) -> None:
        self.submitted: list = []
        self.events = events if events is not None else []

    def submit(self, variant, instances, request_id, answered):
        self.submitted.append((variant, instances, request_id, answered))

    async def start(self):
        self.events.append("start shadow")

    async def stop(self):
        self.events.append("stop shadow")

    def describe(self, variant):
        return {"scored": 0}


BODY = orjson.dumps(
    {"instances": [{"mass": 5200.0, "island": "Biscoe"}, {"island": "Dream", "mass": None}]}
)
ROWS = [("Biscoe", 5200.0), ("Dream", None)]


def core_of(strategy, *variants: str, shadow=None, events=None) -> Core:
    store = Store(*(Model(v) for v in variants))
    runners = {v: Runner(store.get(v).backend, v, events) for v in variants}
    return Core(store, strategy, Request, runners, shadow)


def predict(core: Core, rows=ROWS, key=None, rid="req-1", version=None):
    state = {"request_id": rid}
    answer = asyncio.run(core.predict(rows, key, rid, version, state))
    return answer, state


def test_instances_become_rows_in_schema_order_from_json_and_from_python():
    core = core_of(Route("a"), "a")
    assert core.rows(BODY) == ROWS
    assert core.rows_of(orjson.loads(BODY)["instances"]) == ROWS
    assert (core.name, core.schema) == ("penguin-classifier", SCHEMA)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"{not json", Kind.MALFORMED),
        (b'{"instances": [{"island": 3}]}', Kind.INVALID),
        (b"[]", Kind.INVALID),
    ],
)
def test_a_bad_json_body_is_refused_with_its_kind(body, kind):
    with pytest.raises(ServiceError) as err:
        core_of(Route("a"), "a").rows(body)
    assert err.value.kind == kind


def test_python_values_break_the_same_rules_as_json_and_name_the_instance():
    with pytest.raises(ServiceError) as err:
        core_of(Route("a"), "a").rows_of([{"island": "Dream", "mass": 1.0}, {"island": "x"}])
    assert err.value.kind == Kind.INVALID
    assert err.value.message == "instance 1, field 'mass': Field required"


def test_the_chosen_variant_runs_and_the_answer_names_it():
    strategy = Route("b")
    core = core_of(strategy, "a", "b")
    answer, state = predict(core, key="user-7")
    assert strategy.keys == ["user-7"]
    assert answer.model.variant == "b" and answer.answered == ["Gentoo", "Adelie"]
    assert answer.predictions() == [
        {"label": "Gentoo", "probabilities": {"Adelie": 0.2, "Gentoo": 0.8}},
        {"label": "Adelie", "probabilities": {"Adelie": 0.9, "Gentoo": 0.1}},
    ]
    assert core.runners["b"].ran == [ROWS] and core.runners["a"].ran == []
    assert state == {"request_id": "req-1", "batch_size": 2, "variant": "b", "model_md5": "md5-b"}


def test_a_regressor_answers_values():
    store = Store(Model("a", Backend("regression", [])))
    core = Core(store, Route("a"), Request, {"a": Runner(store.get("a").backend)})
    answer, _ = predict(core)
    assert answer.answered == [6.0, 5.0]
    assert answer.predictions() == [{"value": 6.0}, {"value": 5.0}]


def test_a_version_names_its_variant_and_bypasses_the_strategy():
    strategy = Learning("a")
    shadows = Shadows()
    strategy.shadows = ["b"]
    core = core_of(strategy, "a", "b", shadow=shadows)
    answer, state = predict(core, version="md5-b")
    assert answer.model.variant == "b" and state["variant"] == "b"
    assert strategy.keys == [] and strategy.seen == [] and shadows.submitted == []


def test_an_unknown_version_is_not_found_naming_the_served_ones():
    with pytest.raises(ServiceError) as err:
        predict(core_of(Route("a"), "a", "b"), version="md5-z")
    assert err.value.kind == Kind.NOT_FOUND
    assert err.value.message == (
        "model 'penguin-classifier' has no version 'md5-z'; served: md5-a, md5-b"
    )


def test_a_learning_strategy_is_told_who_answered_what():
    strategy = Learning("a")
    predict(core_of(strategy, "a"), rid="req-9")
    assert strategy.seen == [("req-9", "a", ["Gentoo", "Adelie"])]


def test_each_shadow_gets_the_rows_and_the_answer():
    shadows = Shadows()
    core = core_of(Route("p", ["s1", "s2"]), "p", "s1", "s2", shadow=shadows)
    answer, _ = predict(core, rid="req-3")
    assert answer.model.variant == "p"
    assert shadows.submitted == [
        ("s1", ROWS, "req-3", ["Gentoo", "Adelie"]),
        ("s2", ROWS, "req-3", ["Gentoo", "Adelie"]),
    ]
    assert core.runners["s1"].ran == []  # scored later, by the shadow runner


def test_no_shadow_is_submitted_when_the_strategy_has_none():
    shadows = Shadows()
    predict(core_of(Route("a"), "a", shadow=shadows))
    assert shadows.submitted == []


def test_a_core_without_a_shadow_runner_answers_though_the_strategy_names_shadows():
    answer, _ = predict(core_of(Route("p", ["s1"]), "p", "s1"))
    assert answer.model.variant == "p"


def test_start_and_stop_run_runners_shadow_and_strategy_in_order_then_reverse():
    events: list = []
    strategy = Learning("a", events)
    core = core_of(strategy, "a", "b", shadow=Shadows(events), events=events)

    async def main():
        await core.start()
        events.append("serving")
        await core.stop()

    asyncio.run(main())
    assert events == [
        "start a",
        "start b",
        "start shadow",
        "start strategy",
        "serving",
        "stop strategy",
        "stop shadow",
        "stop b",
        "stop a",
    ]


def test_describe_puts_the_primary_first_with_every_variant_and_its_runner():
    core = core_of(Route("b", ["a"]), "a", "b", shadow=Shadows())
    described = core.describe()
    assert described["strategy"] == "route" and described["variant"] == "b"
    assert [v["variant"] for v in described["variants"]] == ["a", "b"]
    assert described["variants"][0] == {
        "variant": "a",
        "md5": "md5-a",
        "role": "other",
        "runner": {"runner": "fake"},
        "shadow_this_worker": {"scored": 0},
    }
    assert "shadow_this_worker" not in described["variants"][1]


def test_feedback_credits_through_the_strategy():
    core = core_of(Learning("a"), "a")
    assert core.feedback("r1", None, "Gentoo") == {
        "request_id": "r1",
        "variant": "a",
        "reward": 1.0,
    }
    assert core.feedback("r2", 0.25, None)["reward"] == 0.25


@pytest.mark.parametrize(
    ("fails", "kind", "message"),
    [
        (UnknownRequest("r1"), Kind.NOT_FOUND, "unknown or expired request id 'r1'"),
        (AlreadyRewarded("r1"), Kind.CONFLICT, "feedback for request 'r1' was already counted"),
        (ValueError("send 2 labels"), Kind.INVALID, "send 2 labels"),
    ],
)
def test_feedback_refusals_have_their_kinds(fails, kind, message):
    with pytest.raises(ServiceError) as err:
        core_of(Learning("a", fails=fails), "a").feedback("r1", 1.0, None)
    assert (err.value.kind, err.value.message) == (kind, message)


def test_feedback_without_a_learning_strategy_is_not_found():
    with pytest.raises(ServiceError) as err:
        core_of(Route("a"), "a").feedback("r1", 1.0, None)
    assert (err.value.kind, err.value.message) == (
        Kind.NOT_FOUND,
        "strategy 'route' takes no feedback",
    )


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("Emperor", "label 'Emperor' is not one of the model's classes: 'Adelie', 'Gentoo'"),
        (
            ["Adelie", "gentoo"],
            "label 'gentoo' is not one of the model's classes: 'Adelie', 'Gentoo'",
        ),
        (1, "label 1 is not one of the model's classes: 'Adelie', 'Gentoo'"),
    ],
)
def test_feedback_labels_must_be_the_models_classes(label, message):
    with pytest.raises(ServiceError) as err:
        core_of(Learning("a"), "a").feedback("r1", None, label)
    assert (err.value.kind, err.value.message) == (Kind.INVALID, message)
