"""Integration: the bandit strategy through the app — feedback rules and a simulation."""

import random

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import PENGUIN, served_model

CONFIG = """\
strategy: bandit
variants:
  worse: {rev: v1}
  better: {rev: v2}
bandit: {algorithm: thompson, seed: 1}
"""


@pytest.fixture()
def client(artifacts, tmp_path):
    store = ModelStore(
        {
            name: served_model(name, artifacts[tag], tag)
            for name, tag in (("worse", "v1"), ("better", "v2"))
        }
    )
    strategy = build(parse(CONFIG), tmp_path / "state.sqlite")
    with TestClient(create_app(Settings(), store, strategy)) as c:
        yield c


def ask(client):
    r = client.post("/predict", json={"instances": [PENGUIN]})
    assert r.status_code == 200
    return r.headers["x-request-id"], r.json()["model"]["variant"]


def test_feedback_rules(client):
    request_id, variant = ask(client)
    ok = client.post("/feedback", json={"request_id": request_id, "label": "Gentoo"})
    assert ok.status_code == 200
    assert ok.json() == {"request_id": request_id, "variant": variant, "reward": 1.0}
    again = client.post("/feedback", json={"request_id": request_id, "reward": 1})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    unknown = client.post("/feedback", json={"request_id": "nope", "reward": 1})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "unknown or expired request id 'nope'"
    both = client.post("/feedback", json={"request_id": request_id, "reward": 1, "label": "x"})
    assert both.status_code == 422 and "exactly one of reward or label" in both.text
    out_of_range = client.post("/feedback", json={"request_id": request_id, "reward": 2})
    assert out_of_range.status_code == 422
    arms = {v["variant"]: v for v in client.get("/model").json()["variants"]}
    assert arms[variant]["feedbacks"] == 1 and arms[variant]["mean_reward"] == 1.0


@pytest.mark.parametrize("label", ["Emperor", "gentoo", 1, ["Gentoo", "Emperor"]])
def test_feedback_label_outside_the_classes_is_refused_and_not_counted(client, label):
    request_id, _ = ask(client)
    r = client.post("/feedback", json={"request_id": request_id, "label": label})
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "is not one of the model's classes: 'Adelie', 'Chinstrap', 'Gentoo'" in message
    arms = client.get("/model").json()["variants"]
    assert sum(a["feedbacks"] for a in arms) == 0
    ok = client.post("/feedback", json={"request_id": request_id, "label": "Adelie"})
    assert ok.status_code == 200 and ok.json()["reward"] == 0.0


@pytest.mark.parametrize("label", [5.5, {"a": 1}, [], [["Gentoo"]], True, [None]])
def test_a_label_of_the_wrong_shape_is_refused_in_words_not_type_names(client, label):
    request_id, _ = ask(client)
    r = client.post("/feedback", json={"request_id": request_id, "label": label})
    assert (r.status_code, r.json()["error"]["message"]) == (
        422,
        "field 'label': give one of the model's classes, or a list of them (one per instance)",
    )
    assert sum(a["feedbacks"] for a in client.get("/model").json()["variants"]) == 0


def test_simulation_better_arm_takes_over(client):
    """True reward rates 0.6 and 0.8: after 2,000 requests the better one gets >= 80% of the
    last 500."""
    rates = {"worse": 0.6, "better": 0.8}
    world = random.Random(42)
    answered = []
    for _ in range(2000):
        request_id, variant = ask(client)
        reward = 1.0 if world.random() < rates[variant] else 0.0
        r = client.post("/feedback", json={"request_id": request_id, "reward": reward})
        assert r.status_code == 200
        answered.append(variant)
    assert answered[-500:].count("better") >= 400


def test_other_strategies_take_no_feedback(artifacts):
    store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
    with TestClient(create_app(Settings(), store)) as c:
        r = c.post("/feedback", json={"request_id": "x", "reward": 1})
    assert r.status_code == 404 and "strategy 'single' takes no feedback" in r.text
