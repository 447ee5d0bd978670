"""Stage train: fit the estimator named in params and write the one deployable artifact.

Reads data/features/ (transformed training split and fitted transformer), the input schema
and the ``train`` params; writes models/model.zip (see src/artifact.py).
"""

from __future__ import annotations

import json
import logging
import pickle
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy
import pandas as pd
import sklearn
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from src import artifact, onnx_export
from src.stage import (
    StageError,
    canonical_pickle,
    load_params,
    main_wrapper,
    md5_file,
    write_outputs,
)

log = logging.getLogger("lockserve.pipeline")

FEATURES = Path("data/features")
SCHEMA = Path("data/prepared/schema.json")
OUT = Path("models/model.zip")

ESTIMATORS = ("random_forest", "gradient_boosting", "logistic_regression")


def build_estimator(params: dict[str, Any]) -> ClassifierMixin:
    """The estimator named by ``params['estimator']`` with its hyper-parameters, seeded."""
    name = params.get("estimator")
    if name not in ESTIMATORS:
        raise StageError(f"params: estimator is {name!r}; use one of {', '.join(ESTIMATORS)}")
    hyper = dict(params.get(name) or {})
    seed = int(params["seed"])
    try:
        if name == "random_forest":
            return RandomForestClassifier(random_state=seed, n_jobs=1, **hyper)
        if name == "gradient_boosting":
            return GradientBoostingClassifier(random_state=seed, **hyper)
        # A linear model needs scaled inputs; trees do not, so only it gets a scaler.
        return Pipeline(
            [("scale", StandardScaler()), ("clf", LogisticRegression(random_state=seed, **hyper))]
        )
    except TypeError as exc:
        raise StageError(f"params: bad hyper-parameter for {name}: {exc}") from None


def run(
    params: dict[str, Any], features: Path = FEATURES, schema_path: Path = SCHEMA, out: Path = OUT
) -> None:
    """Fit on features/train.parquet and write the artifact to ``out``."""
    schema = json.loads(schema_path.read_text())
    target = schema["target"]
    train_path = features / "train.parquet"
    train = pd.read_parquet(train_path)
    transformer = pickle.loads((features / "transformer.pkl").read_bytes())  # noqa: S301
    x, y = train.drop(columns=[target]), train[target].to_numpy()
    log.info("read %s: %d rows x %d inputs", train_path, *x.shape)
    estimator = build_estimator(params)
    try:
        estimator.fit(x.to_numpy(), y)
    except ValueError as exc:
        raise StageError(f"fitting {params['estimator']} failed: {exc}") from None
    predictor = Pipeline([("preprocess", transformer), ("estimator", estimator)])
    classes = [str(c) for c in predictor.classes_]
    if classes != schema["classes"]:
        log.warning("training data has classes %s of declared %s", classes, schema["classes"])
        schema = {**schema, "classes": classes}
    metadata = {
        "name": artifact.NAME,
        "estimator": params["estimator"],
        "params": params,
        "target": target,
        "classes": classes,
        "model_inputs": list(x.columns),
        "training_data": {"md5": md5_file(train_path), "rows": len(x)},
        "libraries": {
            "python": ".".join(platform.python_version_tuple()[:2]),
            "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__,
            "skl2onnx": version("skl2onnx"),
            "onnx": version("onnx"),
        },
    }
    onnx_bytes = onnx_export.export(estimator, x.shape[1])
    metadata["onnx_exported"] = onnx_bytes is not None
    preprocess = onnx_export.preprocess_spec(transformer)
    if preprocess["inputs"] != metadata["model_inputs"]:
        raise StageError(f"preprocess spec inputs {preprocess['inputs']} != model inputs")
    if onnx_bytes is not None:  # gate before writing: a disagreeing graph is never pinned
        rows, tolerance = int(params["onnx_parity_rows"]), float(params["onnx_tolerance"])
        diff, agree = onnx_export.parity(
            predictor,
            onnx_bytes,
            preprocess,
            onnx_export.sample_rows(schema, rows, seed=0),
            tolerance,
        )
        metadata["onnx_gate"] = {
            "rows": rows,
            "tolerance": tolerance,
            "max_abs_diff": float(f"{diff:.3g}"),
            "label_agreement": agree,
        }
    packed = artifact.pack(canonical_pickle(predictor), schema, metadata, preprocess, onnx_bytes)
    write_outputs({out: packed})


if __name__ == "__main__":
    main_wrapper("train", lambda: run(load_params("train")))
