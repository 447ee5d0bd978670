"""Unit: the MLflow export's own logic (no MLflow): the signature from an input schema, the
pins its environment gets, and what the target refuses before it writes anything."""

import pytest

from api.resolver import Resolved, md5_hex
from contract.schema import Feature, Schema
from package import Job, PackageError
from package import mlflow as target
from tests.conftest import ROOT

FEATURES = (
    Feature("island", "category", False, categories=("Biscoe", "Dream")),
    Feature("bill depth", "number", True, min=10.0, max=25.0),
    Feature("sex", "category", True, categories=("female", "male")),
)


def test_the_signature_types_each_column_and_makes_nullable_ones_optional():
    schema = Schema("classification", "species", FEATURES, ("Adelie", "Gentoo"))
    assert target.signature(schema) == {
        "inputs": [
            {"type": "string", "name": "island", "required": True},
            {"type": "double", "name": "bill depth", "required": False},
            {"type": "string", "name": "sex", "required": False},
        ],
        "outputs": [
            {"type": "string", "name": "label", "required": True},
            {"type": "double", "name": "proba_Adelie", "required": True},
            {"type": "double", "name": "proba_Gentoo", "required": True},
        ],
    }


def test_integer_classes_give_a_long_label_and_regression_a_value():
    integers = Schema("classification", "grade", FEATURES, (3, 1, 2))
    outputs = target.signature(integers)["outputs"]
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("label", "long"),
        ("proba_3", "double"),
        ("proba_1", "double"),
        ("proba_2", "double"),
    ]
    regression = Schema("regression", "mass", FEATURES)
    assert target.signature(regression)["outputs"] == [
        {"type": "double", "name": "value", "required": True}
    ]


def test_the_pins_are_read_from_a_lock_file(tmp_path):
    lock = tmp_path / "clients.lock"
    lock.write_text(
        "# uv pip compile ...\n"
        "mlflow-skinny==3.17.2\n    # via lockserve\n"
        "numpy==2.4.6\n"
        'onnxruntime==1.32.0 ; python_version >= "3.11"\n'
        "pandas==2.3.3\n"
        "scipy==1.17.1\n"
    )
    assert target.requirements(lock) == [
        "mlflow-skinny==3.17.2",
        "numpy==2.4.6",
        "onnxruntime==1.32.0",
        "pandas==2.3.3",
    ]
    lock.write_text("mlflow-skinny==3.17.2\nnumpy==2.4.6\n")
    with pytest.raises(PackageError, match="clients.lock pins no onnxruntime, pandas"):
        target.requirements(lock)


def test_the_export_pins_the_graphs_runtime_as_the_service_does():
    """The export's environment (clients.lock) runs the graph with the numpy and onnxruntime a
    packaged service has (runtime.lock), so both answer alike."""
    runtime = (ROOT / "requirements" / "runtime.lock").read_text().splitlines()
    pins = target.requirements()
    assert {p for p in pins if p.startswith(("numpy==", "onnxruntime=="))} <= set(runtime)
    assert [p.split("==")[0] for p in pins] == list(target.PINNED)


def job(tmp_path, onnx: bool) -> Job:
    data = b"model bytes"
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", md5_hex(data), "v1", "c" * 40, "cache", data
    )
    (tmp_path / "bundle").mkdir()
    return Job(resolved, tmp_path / "bundle", tmp_path, onnx)


def test_an_artifact_without_a_graph_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(PackageError, match="the artifact has no ONNX graph"):
        target.build(job(tmp_path, onnx=False))
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_without_the_clients_environment_it_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(target, "CLIENTS_PYTHON", tmp_path / "no-venv" / "bin" / "python")
    with pytest.raises(PackageError, match=r"is missing: .* \(make clients\)"):
        target.build(job(tmp_path, onnx=True))
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
