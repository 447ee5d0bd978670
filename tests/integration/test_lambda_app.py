"""Integration: the Lambda handler (Mangum around the app) serves a bundle, in process."""

import asyncio
import hashlib
import importlib
import json
import logging
import sys

import pytest

from api import bundle
from api.app import build_store
from api.resolver import ResolutionError, Resolved
from api.serving import ServingConfig, Variant
from api.settings import Settings
from tests.conftest import PENGUIN
from tests.lambda_runtime import http_api_v2_event


def write_bundle(folder, data: bytes):
    md5 = hashlib.md5(data).hexdigest()
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", md5, "v1", "b" * 40, "cache", data
    )
    bundle.write(folder, resolved)
    return md5


@pytest.fixture
def fresh_import(monkeypatch, tmp_path):
    """Import api.lambda_handler anew (it builds at import); undo its global changes after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for key in ("LOCKSERVE_GRPC_PORT", "LOCKSERVE_BUNDLE", "LOCKSERVE_BUNDLE_MD5"):
        monkeypatch.delenv(key, raising=False)  # restored after: the module sets defaults
    monkeypatch.setenv("LOCKSERVE_STATE_DB", str(tmp_path / "state.sqlite"))
    monkeypatch.setenv("LOCKSERVE_SERVING_FILE", str(tmp_path / "absent.yaml"))
    loaded = []

    def load():
        sys.modules.pop("api.lambda_handler", None)
        loaded.append(importlib.import_module("api.lambda_handler"))
        return loaded[-1]

    yield load
    for module in loaded:  # end the lifespan the module started, on its loop
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.run_until_complete(module.handler.app.state.lifespan.__aexit__(None, None, None))
        loop.close()
    sys.modules.pop("api.lambda_handler", None)
    root.handlers[:], root.level = handlers, level
    asyncio.set_event_loop(None)


def test_api_gateway_events_are_answered_by_the_bundled_model(
    fresh_import, monkeypatch, tmp_path, artifacts
):
    md5 = write_bundle(tmp_path / "bundle", artifacts["v1"])
    monkeypatch.setenv("LOCKSERVE_BUNDLE", str(tmp_path / "bundle"))
    module = fresh_import()
    answer = module.handler(http_api_v2_event("POST", "/predict", {"instances": [PENGUIN]}), None)
    assert answer["statusCode"] == 200
    body = json.loads(answer["body"])
    assert body["model"] == {
        "variant": "default",
        "name": "penguin-classifier",
        "md5": md5,
        "rev": "v1",
    }
    ready = module.handler(http_api_v2_event("GET", "/health/ready"), None)
    assert json.loads(ready["body"])["variants"] == {"default": md5}
    bad = module.handler(http_api_v2_event("POST", "/predict", {"instances": [{}]}), None)
    assert bad["statusCode"] == 422 and json.loads(bad["body"])["error"]["code"]


def test_a_bundle_that_does_not_verify_fails_the_init(
    fresh_import, monkeypatch, tmp_path, artifacts
):
    write_bundle(tmp_path / "bundle", artifacts["v1"])
    monkeypatch.setenv("LOCKSERVE_BUNDLE", str(tmp_path / "bundle"))
    monkeypatch.setenv("LOCKSERVE_BUNDLE_MD5", "0" * 32)
    with pytest.raises(
        RuntimeError, match="refusing to start: .* this artifact was built for 0{32}"
    ):
        fresh_import()


def test_a_bad_setting_fails_the_init_in_one_line(fresh_import, monkeypatch, tmp_path, artifacts):
    write_bundle(tmp_path / "bundle", artifacts["v1"])
    monkeypatch.setenv("LOCKSERVE_BUNDLE", str(tmp_path / "bundle"))
    monkeypatch.setenv("LOCKSERVE_BUNDLE_MD5", "")
    with pytest.raises(RuntimeError, match="refusing to start: LOCKSERVE_BUNDLE_MD5='': String"):
        fresh_import()


def test_a_bundle_with_a_rev_asked_for_is_refused(tmp_path, artifacts):
    write_bundle(tmp_path / "bundle", artifacts["v1"])
    settings = Settings(bundle=tmp_path / "bundle", rev="v2")
    one = ServingConfig(variants={"default": Variant(rev="v2")})
    with pytest.raises(ResolutionError, match="LOCKSERVE_REV=v2 asks for another"):
        build_store(settings, one)


def test_a_bundle_serves_one_variant_only(tmp_path, artifacts):
    write_bundle(tmp_path / "bundle", artifacts["v1"])
    settings = Settings(bundle=tmp_path / "bundle", serving_file=tmp_path / "serving.yaml")
    two = ServingConfig(
        strategy="shadow",
        variants={"a": Variant(rev="v1", role="primary"), "b": Variant(rev="v2", role="shadow")},
    )
    with pytest.raises(ResolutionError, match="LOCKSERVE_BUNDLE holds one model; .* names 2"):
        build_store(settings, two)
