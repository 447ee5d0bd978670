"""In-process prediction cost (pytest-benchmark): each backend, one row and 1000 rows.

Run by `python -m bench.run`, which turns the timings into µs per row; not part of `make test`.
"""

import hashlib
from pathlib import Path

import pytest
import yaml

from api.artifact import load
from api.backends import OnnxBackend, SklearnBackend

ROOT = Path(__file__).resolve().parents[1]
PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 47.5,
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 217.0,
    "body_mass_g": 5200.0,
    "sex": "male",
}


@pytest.fixture(scope="module")
def artifact():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    md5 = lock["stages"]["train"]["outs"][0]["md5"]
    data = (ROOT / "models/model.zip").read_bytes()
    assert hashlib.md5(data).hexdigest() == md5, "models/model.zip is not what dvc.lock pins"
    return load(data, md5)


@pytest.mark.parametrize("backend", [OnnxBackend, SklearnBackend], ids=["onnx", "sklearn"])
@pytest.mark.parametrize("rows", [1, 1000])
def test_predict_proba(benchmark, artifact, backend, rows):
    predictor = backend(artifact)
    batch = [PENGUIN] * rows
    result = benchmark(predictor.predict_proba, batch)
    assert result.shape == (rows, 3)
