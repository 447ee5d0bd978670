"""The MLflow export (``make export-mlflow``) as an MLflow user loads it, in .venv-clients
(MLflow, pandas, onnxruntime; nothing of lockserve's but what the model folder carries).

``python -I tests/clients/mlflow_model.py MODEL_DIR ROWS_CSV REFUSED_CSV`` prints one JSON
object: the predictions for the rows of ROWS_CSV (read as ``pandas.read_csv`` reads them), the
error ``predict`` raises for each row of REFUSED_CSV and for bad inputs, the signature and
metadata as MLflow reads them, and what loading says of a changed model zip and of a model
config naming another md5.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model


def error(call: Callable[[], Any]) -> str | None:
    """The exception ``call`` raises, as its type and message, or None."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - what MLflow raises is what is checked
        return f"{type(exc).__name__}: {exc}"
    return None


def main(model_dir: str, rows_csv: str, refused_csv: str) -> dict[str, Any]:
    model = mlflow.pyfunc.load_model(model_dir)
    saved = Model.load(model_dir)
    inputs = json.loads(saved.signature.to_dict()["inputs"])
    # text columns read as text: a column with no value at all would be float64, which
    # MLflow's schema enforcement refuses for a string column
    text = {c["name"]: str for c in inputs if c["type"] == "string"}
    rows = pd.read_csv(rows_csv, dtype=text)
    refused = pd.read_csv(refused_csv, dtype=text)
    answer = model.predict(rows)
    good = rows.iloc[:3].reset_index(drop=True)
    bad = {
        "no_island": good.drop(columns=["island"]),
        "text_depth": good.assign(bill_depth_mm=["deep"] * 3),
        "number_sex": good.assign(sex=pd.Series(["male", 1, "female"], dtype=object)),
        "unknown_island": good.assign(island=["Biscoe", "Atlantis", "Dream"]),
        "deep_bill": good.assign(bill_depth_mm=[15.0, 99.0, 15.0]),
        "no_island_value": good.assign(island=pd.Series([None, "Dream", "Dream"], dtype=object)),
    }
    with tempfile.TemporaryDirectory() as scratch:
        changed = Path(scratch) / "changed"
        shutil.copytree(model_dir, changed)
        zipped = changed / "artifacts" / "model.zip"
        data = bytearray(zipped.read_bytes())
        data[-1] ^= 1
        zipped.write_bytes(bytes(data))
        changed_zip = error(lambda: mlflow.pyfunc.load_model(str(changed)))
    other_md5 = error(lambda: mlflow.pyfunc.load_model(model_dir, model_config={"md5": "0" * 32}))
    return {
        "columns": list(answer.columns),
        "index": answer.index.tolist(),
        "predictions": answer.to_dict("records"),
        "refused": [
            error(lambda i=i: model.predict(refused.iloc[[i]])) for i in range(len(refused))
        ],
        "bad": {name: error(lambda f=frame: model.predict(f)) for name, frame in bad.items()},
        "optional_left_out": model.predict(good.drop(columns=["sex"])).to_dict("records"),
        "signature": {
            "inputs": inputs,
            "outputs": json.loads(saved.signature.to_dict()["outputs"]),
        },
        "metadata": saved.metadata,
        "loader": saved.flavors["python_function"]["loader_module"],
        "changed_zip": changed_zip,
        "other_md5": other_md5,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(*sys.argv[1:])) + "\n")
