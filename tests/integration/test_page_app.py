"""Integration: the page at /, the on-device files (/model/onnx, /model/preprocess) with their
ETag, SHA-256 header and caching, and /docs from local files, through the app."""

import hashlib
import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from api.store import ModelStore
from api.strategies.canary import Canary
from tests.conftest import served_model

PAGE_FILES = ("app.js", "features.js", "style.css")
VENDORED = (
    "ort.wasm.bundle.min.mjs",
    "ort-wasm-simd-threaded.wasm",
    "swagger-ui-bundle.js",
    "swagger-ui.css",
)


def member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read(name)


@pytest.fixture()
def two(artifacts):
    """v1 as the primary variant ``a`` and v2 as ``b``, served by a canary."""
    store = ModelStore(
        {
            "a": served_model("a", artifacts["v1"], "v1"),
            "b": served_model("b", artifacts["v2"], "v2"),
        }
    )
    strategy = Canary({"a": 50, "b": 50})
    with TestClient(create_app(Settings(max_batch=7), store, strategy)) as client:
        yield client


@pytest.mark.parametrize("what,name", [("onnx", "model.onnx"), ("preprocess", "preprocess.json")])
def test_model_files_are_the_verified_artifacts_bytes_with_etag_and_sha256(
    two, artifacts, what, name
):
    for query, tag in (("", "v1"), ("?variant=b", "v2")):
        r = two.get(f"/model/{what}{query}")
        assert r.status_code == 200
        assert r.content == member(artifacts[tag], name)
        assert r.headers["etag"] == f'"{hashlib.md5(artifacts[tag]).hexdigest()}"'
        assert r.headers["x-content-sha256"] == hashlib.sha256(r.content).hexdigest()
        assert r.headers["cache-control"] == "no-cache"  # the URL names no version


def test_a_url_naming_the_md5_is_immutable_and_a_known_etag_is_304(two, artifacts):
    md5 = hashlib.md5(artifacts["v1"]).hexdigest()
    r = two.get(f"/model/onnx?md5={md5}")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = two.get("/model/onnx", headers={"if-none-match": f'"{md5}"'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == f'"{md5}"'
    other = hashlib.md5(artifacts["v2"]).hexdigest()
    assert two.get("/model/onnx", headers={"if-none-match": f'"{other}"'}).status_code == 200


@pytest.mark.parametrize(
    "url,message",
    [
        ("/model/onnx?variant=nope", "no variant 'nope': this server serves a, b"),
        ("/model/preprocess?md5=0123", "variant 'a' serves md5 "),
    ],
)
def test_an_unknown_variant_or_another_md5_is_a_404_saying_so(two, url, message):
    r = two.get(url)
    assert r.status_code == 404
    assert r.json()["error"]["message"].startswith(message)


def test_an_artifact_without_a_graph_is_a_404_naming_why(artifacts):
    data = artifacts["v1"]
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            if info.filename != "model.onnx":
                out.writestr(info, src.read(info))
    graphless = buf.getvalue()
    store = ModelStore({"default": served_model("default", graphless, "v1", backend="sklearn")})
    with TestClient(create_app(Settings(), store)) as client:
        r = client.get("/model/onnx")
        assert r.status_code == 404
        assert "has no ONNX graph" in r.json()["error"]["message"]
        assert client.get("/model").json()["onnx_in_artifact"] is False


def test_the_page_and_its_files_are_served_with_the_batch_limit(two):
    r = two.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'data-max-batch="7"' in r.text and f'data-max-body-bytes="{1 << 20}"' in r.text
    assert r.headers["cache-control"] == "no-cache"
    sources = re.findall(r'(?:src|href)="(/page/[^"]+)"', r.text)
    assert sources  # the page's own script and style, nothing from elsewhere
    assert not re.search(r'(?:src|href)="https?:', r.text)
    for name in (*PAGE_FILES, *(f"vendor/{v}" for v in VENDORED)):
        assert two.get(f"/page/{name}").status_code == 200, name
    script = two.get("/page/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "no-cache" and script.headers["etag"]
    assert (
        two.get("/page/app.js", headers={"if-none-match": script.headers["etag"]}).status_code
        == 304
    )
    assert two.get("/page/index.html").status_code == 404  # the template is served at / only
    assert two.get("/page/vendor/ort-wasm-simd-threaded.wasm").headers["content-type"] == (
        "application/wasm"
    )


def test_docs_load_swagger_ui_from_this_server_only(two):
    r = two.get("/docs")
    assert r.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert assets and all(a.startswith("/page/vendor/") for a in assets), assets
    assert "cdn" not in r.text.lower()
    for asset in assets:
        assert two.get(asset).status_code == 200, asset
    assert two.get("/docs/oauth2-redirect").status_code == 200
    assert two.get("/redoc").status_code == 404


def test_model_carries_a_real_training_row_as_the_example(two, tiny_csv):
    example = two.get("/model").json()["example"]
    schema = two.get("/model").json()["input_schema"]
    assert list(example) == sorted(f["name"] for f in schema["features"])
    assert two.post("/predict", json={"instances": [example]}).status_code == 200
    lines = tiny_csv.splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    # every value is the one of a row of the training table (numbers as floats)
    assert any(
        all(
            str(row[name]) == str(value) or (row[name] and float(row[name]) == value)
            for name, value in example.items()
        )
        for row in rows
    )
