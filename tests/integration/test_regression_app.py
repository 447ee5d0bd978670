"""Integration: a regression model through the app — values, schema, every strategy, and
feedback that fits the task (a reward; a label is refused)."""

import hashlib
import logging
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from contract.artifact import read
from tests.conftest import served_model

VARIANTS = {
    "canary": "  a: {rev: v1, weight: 50}\n  b: {rev: v2, weight: 50}\n",
    "shadow": "  a: {rev: v1, role: primary}\n  b: {rev: v2, role: shadow}\n",
    "bandit": "  a: {rev: v1}\n  b: {rev: v2}\nbandit: {seed: 3}\n",
}
CONFIGS = {name: f"strategy: {name}\nvariants:\n{text}" for name, text in VARIANTS.items()}


def store(regression_artifacts) -> ModelStore:
    return ModelStore(
        {
            name: served_model(name, regression_artifacts[tag], tag)
            for name, tag in (("a", "v1"), ("b", "v2"))
        }
    )


def instances(data: bytes, n: int = 3) -> list[dict]:
    schema = read(data).schema
    out = []
    for i in range(n):
        row = {}
        for f in schema.features:
            if f.type == "number":
                row[f.name] = round(f.min + (f.max - f.min) * (i + 1) / (n + 1), 2)
            else:
                row[f.name] = f.categories[i % len(f.categories)]
        out.append(row)
    return out


@pytest.fixture()
def single(regression_artifacts):
    data = regression_artifacts["v1"]
    models = ModelStore({"default": served_model("default", data, "v1")})
    with TestClient(create_app(Settings(), models)) as client:
        yield client, data


def test_regression_answers_values_equal_to_the_pipeline(single):
    import pandas as pd

    client, data = single
    rows = instances(data)
    r = client.post("/predict", json={"instances": rows})
    assert r.status_code == 200
    body = r.json()
    assert body["model"]["md5"] == hashlib.md5(data).hexdigest()
    assert all(set(p) == {"value"} for p in body["predictions"])
    parts = read(data)
    expected = parts.sklearn_pipeline().predict(pd.DataFrame(rows)[parts.schema.names])
    limit = parts.metadata["onnx_gate"]["limit"]
    got = [p["value"] for p in body["predictions"]]
    assert got == pytest.approx(expected.tolist(), abs=limit)


def test_openapi_and_model_describe_a_regressor(single):
    client, _ = single
    spec = client.get("/openapi.json").json()
    prediction = spec["components"]["schemas"]["Prediction"]
    assert prediction["required"] == ["value"]
    model = client.get("/model").json()
    assert model["task"] == "regression" and model["classes"] == []
    assert model["target"] == "target"


def test_feedback_without_a_bandit_is_404(single):
    client, _ = single
    r = client.post("/feedback", json={"request_id": "x", "reward": 1})
    assert r.status_code == 404


@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_every_strategy_serves_a_regressor(regression_artifacts, tmp_path, strategy, caplog):
    config = parse(CONFIGS[strategy])
    app = create_app(Settings(), store(regression_artifacts), build(config, tmp_path / "s.db"))
    rows = instances(regression_artifacts["v1"], 1)
    with caplog.at_level(logging.INFO, logger="lockserve.shadow"), TestClient(app) as client:
        answers = []
        for i in range(20):
            r = client.post("/predict", json={"instances": rows}, headers={"X-Routing-Key": str(i)})
            assert r.status_code == 200
            answers.append((r.headers["x-request-id"], r.json()))
        variants = {a["model"]["variant"] for _, a in answers}
        if strategy == "shadow":
            assert variants == {"a"}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                lines = [r.fields for r in caplog.records if r.name == "lockserve.shadow"]
                if len(lines) == 20:
                    break
                time.sleep(0.05)
            assert len(lines) == 20
            primary = answers[0][1]["predictions"][0]["value"]
            assert lines[0]["primary_values"] == [primary]
            shadow_value = lines[0]["shadow_values"][0]
            assert lines[0]["max_abs_diff"] == pytest.approx(abs(primary - shadow_value))
        elif strategy == "canary":
            assert variants == {"a", "b"}
        else:
            request_id, answer = answers[-1]
            label = client.post("/feedback", json={"request_id": request_id, "label": "x"})
            assert label.status_code == 422
            assert "predicts target (a number): send a reward" in label.json()["error"]["message"]
            ok = client.post("/feedback", json={"request_id": request_id, "reward": 0.25})
            assert ok.status_code == 200
            assert ok.json()["variant"] == answer["model"]["variant"]
            assert ok.json()["reward"] == 0.25
