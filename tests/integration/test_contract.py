"""Integration: the artifact contract, held from both sides (src writes it, api reads it)."""

import hashlib
import io

import pandas as pd
import pytest

from api import artifact as api_artifact
from api.backends import OnnxBackend, SklearnBackend
from src import artifact as src_artifact


def test_pipeline_artifact_round_trips_through_the_service_loader(artifacts, tiny_csv):
    data = artifacts["v1"]
    served = api_artifact.load(data, hashlib.md5(data).hexdigest())
    model, schema, metadata = src_artifact.unpack(data)
    assert served.schema == schema and api_artifact.FORMAT == src_artifact.FORMAT
    assert served.preprocess == metadata.pop("preprocess")
    assert served.onnx == metadata.pop("onnx") and served.onnx is not None
    assert served.metadata == metadata

    rows = pd.read_csv(io.StringIO(tiny_csv)).head(25)
    features = [f["name"] for f in schema["features"]]
    records = [
        {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in rows[features].to_dict("records")
    ]
    expected = model.predict_proba(rows[features])
    by_sklearn = SklearnBackend(served).predict_proba(records)
    assert by_sklearn.tolist() == expected.tolist()
    by_onnx = OnnxBackend(served).predict_proba(records)
    assert abs(by_onnx - expected).max() < 1e-5
    assert (by_onnx.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_loader_refuses_bytes_that_do_not_match_the_pin(artifacts):
    data = artifacts["v1"]
    with pytest.raises(api_artifact.ArtifactError, match="does not match the pinned 0{32}"):
        api_artifact.load(data, "0" * 32)


def test_loader_refuses_a_zip_of_another_format():
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", '{"format": "other/1"}')
    data = buf.getvalue()
    with pytest.raises(api_artifact.ArtifactError, match="format 'other/1'"):
        api_artifact.load(data, hashlib.md5(data).hexdigest())


def test_artifact_without_onnx_falls_back_to_sklearn_with_one_line(artifacts, caplog):
    from api.resolver import Resolved
    from api.store import load_model
    from src.stage import canonical_pickle

    model, schema, metadata = src_artifact.unpack(artifacts["v1"])
    preprocess = metadata.pop("preprocess")
    metadata.pop("onnx")
    data = src_artifact.pack(canonical_pickle(model), schema, metadata, preprocess, None)
    digest = hashlib.md5(data).hexdigest()
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", digest, "HEAD", "c" * 40, "workspace", data
    )
    served = load_model("default", resolved, "onnx")
    assert served.backend.name == "sklearn" and served.describe()["backend"] == "sklearn"
    lines = [r.getMessage() for r in caplog.records if r.name == "lockserve.backends"]
    assert lines == [
        "artifact has no ONNX graph (the estimator could not be converted): "
        "serving with the sklearn backend"
    ]
    with_onnx = load_model(
        "default",
        Resolved(
            "penguin-classifier",
            "models/model.zip",
            hashlib.md5(artifacts["v1"]).hexdigest(),
            "HEAD",
            "c" * 40,
            "workspace",
            artifacts["v1"],
        ),
    )
    assert with_onnx.backend.name == "onnx"
