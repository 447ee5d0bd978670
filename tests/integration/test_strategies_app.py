"""Integration: two real models from two pipeline runs, routed by canary and shadow."""

import asyncio
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


def test_shadow_scores_after_the_answer_and_logs_agreement(artifacts, caplog):
    with (
        caplog.at_level(logging.INFO, logger="lockserve.shadow"),
        client_for(artifacts, SHADOW) as client,
    ):
        answers = [predict(client) for _ in range(5)]
        assert {a["model"]["variant"] for a in answers} == {"stable"}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stats = client.get("/model").json()["variants"][1]
            if stats.get("shadow_this_worker", {}).get("scored") == 5:
                break
            time.sleep(0.05)
    assert stats["role"] == "shadow" and stats["shadow_this_worker"]["scored"] == 5
    lines = [r.fields for r in caplog.records if r.name == "lockserve.shadow"]
    assert len(lines) == 5
    assert lines[0]["variant"] == "candidate" and lines[0]["primary_labels"] == ["Gentoo"]
    assert lines[0]["agreement"] in (0.0, 1.0) and len(lines[0]["request_id"]) == 32


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
