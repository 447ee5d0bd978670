"""Integration: the page at /, the on-device files (/model/onnx, /model/preprocess) with their
ETag, SHA-256 header and caching, and /docs from local files, through the app."""

import hashlib
import io
import re
import zipfile

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.protocols.page import VENDORED
from api.settings import Settings
from api.store import ModelStore
from api.strategies.canary import Canary
from contract.artifact import read
from contract.schema import Schema
from tests.conftest import ROOT, build_artifact, served_model

PAGE_FILES = ("app.js", "features.js", "style.css")


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


def test_model_carries_the_first_complete_training_row_as_the_example(
    two, tiny_csv, params, tmp_path
):
    from src import prepare, train

    (tmp_path / "raw.csv").write_text(tiny_csv)
    prepare.run(params["prepare"], tmp_path / "prepared", tmp_path / "raw.csv")
    split = pd.read_parquet(tmp_path / "prepared" / "train.parquet")
    described = two.get("/model").json()
    schema = Schema.from_json(described["input_schema"])
    assert described["example"] == train.example_row(split, schema)
    assert None not in described["example"].values()
    assert two.post("/predict", json={"instances": [described["example"]]}).status_code == 200


def test_the_vendored_files_are_the_ones_make_web_copies():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^WEB_FILES := (.*?)(?<!\\)$", makefile, re.MULTILINE | re.DOTALL)
    files = listed.group(1).replace("\\\n", " ").split()
    assert sorted(f.rsplit("/", 1)[1] for f in files) == sorted(VENDORED)


def test_example_row_false_keeps_training_data_out_of_the_artifact(params, tiny_csv, tmp_path):
    from src.stage import StageError

    data = build_artifact(tmp_path / "none", params, tiny_csv, example_row=False)
    assert "example" not in read(data).metadata
    store = ModelStore({"default": served_model("default", data, "v1")})
    with TestClient(create_app(Settings(), store)) as client:
        assert client.get("/model").json()["example"] is None
    with pytest.raises(StageError, match="train.example_row must be true or false"):
        build_artifact(tmp_path / "bad", params, tiny_csv, example_row="yes")
