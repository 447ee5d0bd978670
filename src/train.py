"""Stage train: fit the estimator named in params and write the one deployable artifact.

Reads data/features/ (transformed training split and fitted transformer), the input schema
and raw training split (data/prepared/) and the ``train`` params; writes models/model.zip
(contract.artifact): the sklearn pipeline, and its ONNX graph if it passes the parity gate
against sklearn (a graph that does not is left out, with one log line: sklearn answers).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from contract import artifact
from contract.schema import Schema
from src import estimators, onnx_export
from src.stage import (
    StageError,
    canonical_pickle,
    load_params,
    main_wrapper,
    md5_file,
    read_schema,
    write_outputs,
)
from src.tables import categorical_as_object

log = logging.getLogger("lockserve.pipeline")

FEATURES = Path("data/features")
PREPARED = Path("data/prepared")
OUT = Path("models/model.zip")
KEYS = {
    "estimator",
    "seed",
    "n_jobs",
    "onnx_parity_rows",
    "onnx_tolerance",
    "example_row",
    *estimators.ESTIMATORS,
}


def gate_limit(params: dict[str, Any], task: str, y: np.ndarray) -> tuple[float, float | None]:
    """The parity limit: ``onnx_tolerance`` on probabilities, or times the target's standard
    deviation on values (regression). Returns the limit and that deviation."""
    tolerance = params.get("onnx_tolerance")
    if not isinstance(tolerance, float | int) or not 0 < tolerance < np.inf:  # NaN fails too
        raise StageError("params: train.onnx_tolerance must be a positive number")
    if task == "classification":
        return float(tolerance), None
    spread = float(np.std(y))
    return float(tolerance) * spread, spread


def example_row(raw: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """One real training row for people to start from (the service's page fills its form with
    it): the first with every feature present, else the first; missing values as None."""
    frame = raw[schema.names]
    complete = frame.dropna()
    row = (complete if len(complete) else frame).iloc[0]
    return {
        f.name: None
        if pd.isna(row[f.name])
        else float(row[f.name])
        if f.type == "number"
        else str(row[f.name])
        for f in schema.features
    }


def run(
    params: dict[str, Any],
    features: Path = FEATURES,
    prepared: Path = PREPARED,
    out: Path = OUT,
) -> None:
    """Fit on features/train.parquet and write the artifact to ``out``."""
    unknown = set(params) - KEYS
    if unknown:
        raise StageError(f"params: train has unknown key(s) {sorted(unknown)}")
    keep_example = params.get("example_row", True)
    if not isinstance(keep_example, bool):
        raise StageError("params: train.example_row must be true or false")
    rows = params.get("onnx_parity_rows")
    if not isinstance(rows, int) or rows < 1:
        raise StageError("params: train.onnx_parity_rows must be a positive integer")
    schema = read_schema(prepared / "schema.json")
    task, target = schema.task, schema.target
    estimator = estimators.build(params, task)
    train_path = features / "train.parquet"
    train = pd.read_parquet(train_path)
    transformer = pickle.loads((features / "transformer.pkl").read_bytes())  # noqa: S301
    x, y = train.drop(columns=[target]), train[target].to_numpy()
    log.info("read %s: %d rows x %d inputs; fitting %s", train_path, *x.shape, params["estimator"])
    try:
        estimator.fit(x.to_numpy(np.float32), y)
    except ValueError as exc:
        message = " ".join(str(exc).split())
        raise StageError(f"fitting {params['estimator']} failed: {message}") from None
    if "n_jobs" in estimator.get_params():
        # Threads add up a forest's trees in varying order, so the last bits of a prediction
        # would vary from run to run; one job predicts in tree order, the same every time.
        estimator.set_params(n_jobs=1)
    # Model inputs are float32 on both paths (the ONNX graph takes float32), so the pickled
    # pipeline and the graph compare the same numbers with the same thresholds.
    as_float32 = FunctionTransformer(np.asarray, kw_args={"dtype": np.float32})
    predictor = Pipeline(
        [("preprocess", transformer), ("float32", as_float32), ("estimator", estimator)]
    )
    metadata: dict[str, Any] = {
        "estimator": params["estimator"],
        "params": params,
        "target": target,
        "model_inputs": list(x.columns),
        "training_data": {"md5": md5_file(train_path), "rows": len(x)},
        "libraries": {
            "python": ".".join(platform.python_version_tuple()[:2]),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "skl2onnx": version("skl2onnx"),
            "onnx": version("onnx"),
        },
    }
    if keep_example:
        metadata["example"] = example_row(pd.read_parquet(prepared / "train.parquet"), schema)
    if task == "classification":
        classes = [c.item() if isinstance(c, np.generic) else c for c in predictor.classes_]
        if classes != list(schema.classes):
            log.warning("training data has classes %s of declared %s", classes, schema.classes)
            schema = dataclasses.replace(schema, classes=tuple(classes))
        metadata["classes"] = classes
    preprocess = onnx_export.preprocess_spec(transformer)
    if preprocess["inputs"] != metadata["model_inputs"]:
        raise StageError(f"preprocess spec inputs {preprocess['inputs']} != model inputs")
    onnx_bytes = onnx_export.export(estimator, x.shape[1], task)
    metadata["onnx_exported"] = onnx_bytes is not None
    if onnx_bytes is not None:  # gate before writing: a disagreeing graph is never pinned
        limit, spread = gate_limit(params, task, y)
        raw = categorical_as_object(
            pd.read_parquet(prepared / "train.parquet"),
            [f.name for f in schema.features if f.type == "category"],
        )
        sample = onnx_export.sample_rows(schema, rows, seed=0, pool=raw)
        metadata["onnx_gate"] = {"tolerance": params["onnx_tolerance"], "limit": limit}
        if spread is not None:
            metadata["onnx_gate"]["target_std"] = spread
        try:
            gate = onnx_export.parity(predictor, onnx_bytes, preprocess, schema, sample, limit)
        except StageError as exc:  # e.g. values float32 cannot carry: sklearn answers instead
            log.warning("%s; the artifact serves with sklearn only", exc)
            onnx_bytes, metadata["onnx_exported"] = None, False
            metadata["onnx_gate"]["refused"] = str(exc)
        else:
            metadata["onnx_gate"].update(gate)
    packed = artifact.pack(canonical_pickle(predictor), schema, metadata, preprocess, onnx_bytes)
    write_outputs({out: packed})


if __name__ == "__main__":
    main_wrapper("train", lambda: run(load_params("train")))
