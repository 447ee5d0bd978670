"""Integration: the artifact contract, held from both sides (train writes it, the service
reads it through the same contract/ module, and both backends answer like the pickled
pipeline)."""

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from api import artifact as api_artifact
from api.backends import OnnxBackend, SklearnBackend
from contract import artifact
from contract.features import FeatureBuilder
from contract.labels import labels
from src.onnx_export import sample_rows
from src.tables import categorical_as_object, records


def raw_rows(csv: str, schema, n: int = 25) -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(csv)).head(n)
    categorical = [f.name for f in schema.features if f.type == "category"]
    return categorical_as_object(frame, categorical)[schema.names]


def test_pipeline_artifact_round_trips_through_the_service_loader(artifacts, tiny_csv):
    data = artifacts["v1"]
    served = api_artifact.load(data, hashlib.md5(data).hexdigest())
    assert served == artifact.read(data)
    assert served.onnx is not None and served.task == "classification"

    rows = raw_rows(tiny_csv, served.schema)
    expected = served.sklearn_pipeline().predict_proba(rows)
    by_sklearn = SklearnBackend(served).predict(records(rows))
    assert by_sklearn.tolist() == expected.tolist()
    by_onnx = OnnxBackend(served).predict(records(rows))
    assert abs(by_onnx - expected).max() <= served.metadata["onnx_gate"]["limit"]
    assert (labels(by_onnx) == labels(expected)).all()


def test_service_rows_and_pipeline_columns_read_the_spec_alike(artifacts):
    parts = artifact.read(artifacts["v1"])
    frame = sample_rows(parts.schema, 500, seed=3)
    builder = FeatureBuilder(parts.preprocess, parts.schema.names)
    by_columns = builder.columns({n: frame[n].to_numpy() for n in parts.schema.names})
    np.testing.assert_array_equal(builder.rows(records(frame)), by_columns)


def test_loader_refuses_bytes_that_do_not_match_the_pin(artifacts):
    data = artifacts["v1"]
    with pytest.raises(api_artifact.ArtifactError, match="does not match the pinned 0{32}"):
        api_artifact.load(data, "0" * 32)


def test_loader_refuses_a_zip_of_another_format():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", '{"format": "other/1"}')
    data = buf.getvalue()
    with pytest.raises(api_artifact.ArtifactError, match="format 'other/1'"):
        api_artifact.load(data, hashlib.md5(data).hexdigest())


def test_artifact_without_onnx_falls_back_to_sklearn_with_one_line(artifacts, caplog):
    from api.resolver import Resolved
    from api.store import load_model

    parts = artifact.read(artifacts["v1"])
    data = artifact.pack(parts.pickled, parts.schema, parts.metadata, parts.preprocess, None)
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
    digest = hashlib.md5(artifacts["v1"]).hexdigest()
    with_onnx = Resolved(
        "penguin-classifier",
        "models/model.zip",
        digest,
        "HEAD",
        "c" * 40,
        "workspace",
        artifacts["v1"],
    )
    assert load_model("default", with_onnx).backend.name == "onnx"
