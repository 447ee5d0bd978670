"""Integration: two real models from two pipeline runs, routed by canary and shadow."""

import asyncio
import hashlib
import logging
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.backends import decide
from api.serving import parse
from api.settings import Settings
from api.store import ModelStore
from api.strategies import build
from tests.conftest import PENGUIN, served_model

CANARY = """\
strategy: canary
variants:
  stable: {rev: v1, weight: 50}
  candidate: {rev: v2, weight: 50}
"""
SHADOW = """\
strategy: shadow
variants:
  stable: {rev: v1, role: primary}
  candidate: {rev: v2, role: shadow}
"""


def two_models(artifacts) -> ModelStore:
    return ModelStore(
        {
            name: served_model(name, artifacts[tag], tag)
            for name, tag in (("stable", "v1"), ("candidate", "v2"))
        }
    )


def client_for(artifacts, text, store=None):
    store = store or two_models(artifacts)
    return TestClient(create_app(Settings(), store, build(parse(text))))


def predict(client, key=None):
    headers = {"X-Routing-Key": key} if key else {}
    r = client.post("/predict", json={"instances": [PENGUIN]}, headers=headers)
    assert r.status_code == 200
    return r.json()


def test_canary_is_sticky_per_key_and_names_the_variant(artifacts):
    md5 = {tag: hashlib.md5(artifacts[tag]).hexdigest() for tag in ("v1", "v2")}
    with client_for(artifacts, CANARY) as client:
        seen = {}
        for i in range(40):
            key = f"user-{i}"
            first = predict(client, key)["model"]
            assert all(predict(client, key)["model"] == first for _ in range(3))
            seen[key] = first
        variants = {m["variant"] for m in seen.values()}
        assert variants == {"stable", "candidate"}
        for model in seen.values():
            assert model["md5"] == md5["v1" if model["variant"] == "stable" else "v2"]
        described = client.get("/model").json()
        assert described["strategy"] == "canary"
        weights = {v["variant"]: (v["role"], v["weight"], v["rev"]) for v in described["variants"]}
        assert weights == {"stable": ("canary", 0.5, "v1"), "candidate": ("canary", 0.5, "v2")}


def instances_where_the_models_disagree(artifacts) -> list[dict]:
    """Two instances: one both models label alike, one they label differently."""
    from contract.artifact import read
    from src.onnx_export import sample_rows
    from src.tables import records

    models = two_models(artifacts)
    schema = read(artifacts["v1"]).schema
    rows = records(sample_rows(schema, 2000, seed=11))
    labels = {}
    for name in ("stable", "candidate"):
        backend = models.get(name).backend
        labels[name] = decide(backend.task, backend.classes, backend.predict(rows))
    same = [
        r for r, a, b in zip(rows, labels["stable"], labels["candidate"], strict=True) if a == b
    ]
    differ = [
        r for r, a, b in zip(rows, labels["stable"], labels["candidate"], strict=True) if a != b
    ]
    assert same and differ, "the two test models should disagree somewhere"
    return [dict(zip(schema.names, row, strict=True)) for row in (same[0], differ[0])]


def test_shadow_scores_after_the_answer_and_logs_agreement(artifacts, caplog):
    pair = instances_where_the_models_disagree(artifacts)
    with (
        caplog.at_level(logging.INFO, logger="lockserve.shadow"),
        client_for(artifacts, SHADOW) as client,
    ):
        responses = [client.post("/predict", json={"instances": pair}) for _ in range(5)]
        request_ids = {r.headers["x-request-id"] for r in responses}
        assert {r.json()["model"]["variant"] for r in responses} == {"stable"}
        primary = [p["label"] for p in responses[0].json()["predictions"]]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stats = client.get("/model").json()["variants"][1]
            if stats.get("shadow_this_worker", {}).get("scored") == 10:
                break
            time.sleep(0.05)
    assert stats["role"] == "shadow" and stats["shadow_this_worker"]["scored"] == 10
    assert stats["shadow_this_worker"]["agreement"] == 0.5  # one of each pair agrees
    # what the shadow model answers, computed from it directly
    shadow = two_models(artifacts).get("candidate").backend
    rows = [tuple(instance.values()) for instance in pair]
    expected = decide(shadow.task, shadow.classes, shadow.predict(rows))
    assert expected[0] == primary[0] and expected[1] != primary[1]
    lines = [r.fields for r in caplog.records if r.name == "lockserve.shadow"]
    assert {line["request_id"] for line in lines} == request_ids and len(lines) == 5
    for line in lines:
        assert line["variant"] == "candidate" and line["primary_labels"] == primary
        assert line["shadow_labels"] == expected and line["agreement"] == 0.5
        assert line["md5"] == hashlib.md5(artifacts["v2"]).hexdigest()


@pytest.mark.parametrize("fault", ["slow", "failing"])
def test_slow_or_failing_shadow_never_changes_the_answer(artifacts, fault):
    plain = client_for(
        artifacts,
        "variants:\n  stable: {rev: v1}\n",
        ModelStore({"stable": two_models(artifacts).get("stable")}),
    )
    with plain:
        expected = predict(plain)
    store = two_models(artifacts)
    calls = []

    def slow(rows):
        calls.append(rows)
        time.sleep(1.0)
        raise RuntimeError("should never be seen")

    def failing(rows):
        calls.append(rows)
        raise RuntimeError("shadow model exploded")

    store.get("candidate").backend.predict = slow if fault == "slow" else failing
    with client_for(artifacts, SHADOW, store) as client:
        started = time.perf_counter()
        got = [predict(client) for _ in range(3)]
        elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while len(calls) < (1 if fault == "slow" else 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        if fault == "failing":
            shadow = client.get("/model").json()["variants"][1]["shadow_this_worker"]
            assert shadow["failed"] == 3 and shadow["scored"] == 0
    assert all(g == expected for g in got)
    assert elapsed < 0.5
    assert calls and all(len(rows) == 1 for rows in calls)  # the shadow did run


def test_full_shadow_queue_drops_and_counts(artifacts):
    from api.shadowing import ShadowRunner

    runner = ShadowRunner(two_models(artifacts), max_queue=2)

    async def main():
        await runner.start()
        for _ in range(5):
            runner.submit("candidate", [PENGUIN], "r", ["Gentoo"])
        return runner.stats["candidate"].dropped

    assert asyncio.run(main()) == 3


def test_metrics_scrape_cleanly(artifacts):
    from prometheus_client.parser import text_string_to_metric_families

    def predictions_by(client):
        """(variant, status) -> count of /predict requests (the registry is process-wide)."""
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        assert "lockserve_request_seconds" in families
        counts = {}
        for sample in families["lockserve_requests"].samples:
            if sample.name.endswith("_total") and sample.labels["path"] == "/predict":
                key = (sample.labels["variant"], sample.labels["status"])
                counts[key] = counts.get(key, 0) + sample.value
        return counts

    with client_for(artifacts, CANARY) as client:
        before = predictions_by(client)
        variants = [predict(client, key=f"k{i}")["model"]["variant"] for i in range(4)]
        client.post("/predict", json={"instances": []})
        after = predictions_by(client)
    for variant in set(variants):
        grew = after[(variant, "200")] - before.get((variant, "200"), 0)
        assert grew == variants.count(variant)
    assert after[("", "422")] - before.get(("", "422"), 0) == 1
