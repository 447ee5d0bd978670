"""Integration: the app through a test client, on a real artifact from the pipeline."""

import functools
import hashlib
import json
import logging

import pytest
from fastapi.testclient import TestClient

from api import middleware
from api.app import create_app
from api.settings import Settings
from api.store import ModelStore
from tests.conftest import PENGUIN, served_model

PENGUIN_FIELDS = list(PENGUIN)


def store_for(data: bytes, rev: str = "v1", backend: str = "onnx") -> ModelStore:
    metrics = {"reports/metrics.json": {"accuracy": 0.99}}
    return ModelStore({"default": served_model("default", data, rev, backend, metrics)})


# Every behaviour holds on each way in: the thin ASGI handler and the FastAPI route, with the
# ONNX backend, and with the sklearn backend behind the adaptive batcher.
MODES = {
    "fast-onnx": {"fast_path": True, "backend": "onnx"},
    "route-onnx": {"fast_path": False, "backend": "onnx"},
    "fast-sklearn-batched": {"fast_path": True, "backend": "sklearn"},
}


@pytest.fixture(params=sorted(MODES))
def client(request, artifacts):
    mode = MODES[request.param]
    settings = Settings(max_batch=5, max_body_bytes=4096, **mode)
    app = create_app(settings, store_for(artifacts["v1"], backend=mode["backend"]))
    with TestClient(app) as c:
        c.mode = mode
        yield c


def post(client, body, **kw):
    return client.post("/predict", json=body, **kw)


def test_predict_answers_label_probabilities_and_model(client, artifacts):
    r = post(
        client,
        {
            "instances": [
                PENGUIN,
                {
                    **PENGUIN,
                    "island": "Torgersen",
                    "sex": None,
                    "bill_depth_mm": 18.7,
                    "flipper_length_mm": 181.0,
                    "body_mass_g": 3750.0,
                },
            ]
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert [p["label"] for p in body["predictions"]] == ["Gentoo", "Adelie"]
    for p in body["predictions"]:
        assert set(p["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
    assert body["model"] == {
        "variant": "default",
        "name": "penguin-classifier",
        "md5": hashlib.md5(artifacts["v1"]).hexdigest(),
        "rev": "v1",
    }


def test_predictions_equal_the_artifact_loaded_directly(client, artifacts, tiny_csv):
    import io

    import pandas as pd

    from contract.artifact import read
    from src.tables import categorical_as_object, records

    parts = read(artifacts["v1"])
    rows = pd.read_csv(io.StringIO(tiny_csv))[parts.schema.names].iloc[::9].head(5)
    rows = categorical_as_object(rows, ["island", "sex"])
    instances = [dict(zip(parts.schema.names, r, strict=True)) for r in records(rows)]
    got = post(client, {"instances": instances}).json()["predictions"]
    expected = parts.sklearn_pipeline().predict_proba(rows)
    exact = client.mode["backend"] == "sklearn"
    limit = parts.metadata["onnx_gate"]["limit"]
    for pred, probs in zip(got, expected, strict=True):
        assert list(pred["probabilities"].values()) == pytest.approx(
            list(probs), abs=0 if exact else limit
        )


ERRORS = {
    "missing field": (
        {"instances": [{k: v for k, v in PENGUIN.items() if k != "sex"}]},
        "missing",
        0,
        "sex",
    ),
    "extra field": ({"instances": [{**PENGUIN, "year": 2008}]}, "extra_forbidden", 0, "year"),
    "wrong type": (
        {"instances": [PENGUIN, {**PENGUIN, "body_mass_g": "heavy"}]},
        "float_type",
        1,
        "body_mass_g",
    ),
    "string number": (
        {"instances": [{**PENGUIN, "bill_depth_mm": "15.0"}]},
        "float_type",
        0,
        "bill_depth_mm",
    ),
    "bool number": (
        {"instances": [{**PENGUIN, "bill_depth_mm": True}]},
        "float_type",
        0,
        "bill_depth_mm",
    ),
    "unknown category": (
        {"instances": [{**PENGUIN, "island": "Atlantis"}]},
        "literal_error",
        0,
        "island",
    ),
    "null in non-nullable": (
        {"instances": [{**PENGUIN, "island": None}]},
        "literal_error",
        0,
        "island",
    ),
    "out of range": (
        {"instances": [PENGUIN, PENGUIN, {**PENGUIN, "flipper_length_mm": 999}]},
        "less_than_equal",
        2,
        "flipper_length_mm",
    ),
    "below range": (
        {"instances": [{**PENGUIN, "body_mass_g": -1}]},
        "greater_than_equal",
        0,
        "body_mass_g",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_schema_violations_are_422_naming_instance_and_field(client, case):
    body, kind, index, field = ERRORS[case]
    r = post(client, body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert {"type": kind, "instance": index, "field": field}.items() <= error["details"][0].items()
    assert f"instance {index}, field '{field}'" in error["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_are_422(client, literal):
    raw = json.dumps({"instances": [PENGUIN]}).replace("15.0", literal)
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    detail = r.json()["error"]["details"][0]
    assert (detail["type"], detail["field"]) == ("finite_number", "bill_depth_mm")


@pytest.mark.parametrize("instances,kind", [([], "too_short"), ([PENGUIN] * 6, "too_long")])
def test_empty_or_oversize_batch_is_422(client, instances, kind):
    r = post(client, {"instances": instances})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["type"] == kind


@pytest.mark.parametrize("body", [{}, {"instances": [PENGUIN], "extra": 1}, [PENGUIN], "x"])
def test_wrong_body_shape_is_422(client, body):
    r = post(client, body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_malformed_json_is_400(client):
    r = client.post(
        "/predict", content=b'{"instances": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"
    assert r.json()["error"]["message"].startswith("request body is not valid JSON")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/predict", content=json.dumps({"instances": [PENGUIN]}), headers=headers)
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client):
    r = client.post(
        "/predict",
        content=json.dumps({"instances": [PENGUIN]}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_oversize_body_is_413(client):
    r = client.post(
        "/predict", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "over the 4096-byte limit" in r.json()["error"]["message"]


def test_oversize_chunked_body_is_413(client, monkeypatch):
    # the test client never ends the body it streams: after the answer the service would
    # read what is left for LINGER_S (10 s, tests/unit/test_linger.py); 0.2 s here
    monkeypatch.setattr(middleware, "linger", functools.partial(middleware.linger, max_s=0.2))

    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("fast_path", [True, False])
def test_unexpected_failure_is_500_without_a_trace(artifacts, monkeypatch, fast_path):
    store = store_for(artifacts["v1"])

    def boom(rows):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store.get("default").backend, "predict", boom)
    app = create_app(Settings(fast_path=fast_path), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = post(c, {"instances": [PENGUIN]})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "secret" not in r.text and "Traceback" not in r.text


def test_health_and_model(client, artifacts):
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["variants"] == {"default": hashlib.md5(artifacts["v1"]).hexdigest()}
    model = client.get("/model").json()
    assert model["md5"] == hashlib.md5(artifacts["v1"]).hexdigest() and model["rev"] == "v1"
    assert model["params"]["estimator"] == "random_forest"
    assert model["metrics"] == {"reports/metrics.json": {"accuracy": 0.99}}
    assert [f["name"] for f in model["input_schema"]["features"]][0] == "island"
    assert model["strategy"] == "single" and model["backend"] == client.mode["backend"]
    assert model["runner"]["runner"] == (
        "batch" if client.mode["backend"] == "sklearn" else "inline"
    )


def test_ready_is_503_without_a_model(artifacts):
    store = store_for(artifacts["v1"])
    app = create_app(Settings(), store)
    store._models.clear()
    with TestClient(app) as c:
        r = c.get("/health/ready")
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"


def test_openapi_shows_real_fields_and_categories(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    request = spec["components"]["schemas"]["PredictRequest"]
    assert request["properties"]["instances"]["maxItems"] == 5
    instance = spec["components"]["schemas"]["Instance"]
    assert instance["required"] == PENGUIN_FIELDS
    assert instance["properties"]["island"]["enum"] == ["Biscoe", "Dream", "Torgersen"]
    flipper = instance["properties"]["flipper_length_mm"]
    assert flipper["anyOf"][0]["maximum"] == 240.0
    assert instance["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


def test_request_id_is_echoed_or_generated_and_logged(client, caplog):
    with caplog.at_level(logging.INFO, logger="lockserve.access"):
        r = post(client, {"instances": [PENGUIN]}, headers={"X-Request-ID": "abc-123"})
        r2 = post(client, {"instances": [PENGUIN, PENGUIN]})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(r2.headers["x-request-id"]) == 32
    lines = [rec.fields for rec in caplog.records if rec.name == "lockserve.access"]
    assert lines[0]["request_id"] == "abc-123" and lines[0]["status"] == 200
    assert lines[1]["batch_size"] == 2 and lines[1]["model_md5"] == r.json()["model"]["md5"]
    assert lines[1]["latency_ms"] > 0 and lines[1]["method"] == "POST"


def test_app_resolves_the_rev_it_is_given(model_repo, artifacts):
    app = create_app(Settings(repo=model_repo, rev="v1"))
    with TestClient(app) as c:
        assert c.get("/model").json()["md5"] == hashlib.md5(artifacts["v1"]).hexdigest()
        assert post(c, {"instances": [PENGUIN]}).json()["model"]["rev"] == "v1"


def test_an_app_a_reload_replaced_is_freed_with_its_models(artifacts):
    """FastAPI's per-endpoint caches hold every app ever built through its closures; a master
    that rebuilds on reload lets go of the old one (api.app.release_replaced)."""
    import gc
    import weakref

    from api.app import release_replaced

    def built() -> weakref.ref:
        store = ModelStore({"default": served_model("default", artifacts["v1"], "v1")})
        app = create_app(Settings(), store)
        with TestClient(app) as client:  # every route classified, as serving does
            assert client.post("/predict", json={"instances": [PENGUIN]}).status_code == 200
            assert client.get("/model").status_code == 200
        return weakref.ref(store)

    old = built()
    gc.collect()
    assert old() is not None  # kept alive by FastAPI's caches alone
    release_replaced()
    assert old() is None


def test_an_app_built_from_the_local_store_needs_no_repository(model_repo, artifacts, tmp_path):
    """What a worker does on a reload: the bytes the master verified, published to the local
    store and read back, build an app that serves the same pinned model, with no repository."""
    from api.swap import LocalStore

    app = create_app(Settings(repo=model_repo, rev="v1"))
    store = LocalStore(tmp_path / "store")
    generation = store.publish(app.state.verified)
    nowhere = Settings(repo=tmp_path / "no-repo", rev="v2", serving_file=tmp_path / "no.yaml")
    rebuilt = create_app(nowhere, verified=store.read(generation))
    with TestClient(app) as first, TestClient(rebuilt) as second:
        answers = [post(c, {"instances": [PENGUIN] * 3}).json() for c in (first, second)]
        described = [c.get("/model").json() for c in (first, second)]
    assert answers[0] == answers[1]
    assert answers[1]["model"]["md5"] == hashlib.md5(artifacts["v1"]).hexdigest()
    for seen in described:  # each process measured its own load
        for variant in [seen, *seen["variants"]]:
            variant["startup_ms"].pop("load_ms")
    assert described[0] == described[1]
