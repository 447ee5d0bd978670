"""Stage evaluate: score the artifact on the held-out split; write metrics and plot data.

Reads models/model.zip and data/prepared/test.parquet (raw features, exactly what a client
sends); writes reports/metrics.json and the CSVs behind `dvc plots show` (reports/plots/).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from src import artifact, onnx_export
from src.featurize import categorical_as_object
from src.stage import StageError, load_params, main_wrapper, write_outputs

log = logging.getLogger("lockserve.pipeline")

MODEL = Path("models/model.zip")
TEST = Path("data/prepared/test.parquet")
REPORTS = Path("reports")
DIGITS = 6
# The label contract: the first class (in metadata.classes order) whose probability is within
# TIE of the highest, so float32 (ONNX) and float64 (sklearn) sums agree on ties.
TIE = 1e-6


def labels(proba: np.ndarray) -> np.ndarray:
    """Index of the answered class per row, by the label contract."""
    return (proba >= proba.max(axis=1, keepdims=True) - TIE).argmax(axis=1)


def metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro F1, one-vs-rest macro ROC AUC and log loss, rounded for stable diffs."""
    pred = np.asarray(classes)[labels(proba)]
    return {
        "accuracy": round(float(accuracy_score(y_true, pred)), DIGITS),
        "f1_macro": round(float(f1_score(y_true, pred, average="macro")), DIGITS),
        "roc_auc_ovr": round(
            float(roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)), DIGITS
        ),
        "log_loss": round(float(log_loss(y_true, proba, labels=classes)), DIGITS),
    }


def roc_table(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], points: int
) -> pd.DataFrame:
    """One-vs-rest ROC per class, interpolated on a common false-positive-rate grid."""
    grid = np.linspace(0.0, 1.0, points)
    table = {"fpr": grid}
    for i, cls in enumerate(classes):
        fpr, tpr, _ = roc_curve(y_true == cls, proba[:, i])
        table[cls] = np.interp(grid, fpr, tpr)
    return pd.DataFrame(table)


def sample_rows(schema: dict[str, Any], n: int, seed: int) -> pd.DataFrame:
    """``n`` random rows inside the schema: numbers in range, any category, some missing."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for f in schema["features"]:
        if f["type"] == "number":
            values = rng.uniform(f["min"], f["max"], n).round(1).astype(object)
        else:
            values = rng.choice(np.asarray(f["categories"], dtype=object), n)
        if f["nullable"]:
            values[rng.random(n) < 0.05] = np.nan
        columns[f["name"]] = values
    frame = pd.DataFrame(columns)
    for f in schema["features"]:
        if f["type"] == "number":
            frame[f["name"]] = frame[f["name"]].astype("float64")
    return frame


def onnx_parity(
    model: Any, metadata: dict[str, Any], rows: pd.DataFrame, tolerance: float
) -> dict[str, float]:
    """Compare the ONNX path (spec features + onnxruntime) with sklearn on ``rows``.

    Fails the stage above ``tolerance`` or on any label that differs, so a conversion bug
    can never ship.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(metadata["onnx"], providers=["CPUExecutionProvider"])
    inputs = onnx_export.features(metadata["preprocess"], rows)
    p_onnx = session.run(["probabilities"], {session.get_inputs()[0].name: inputs})[0]
    p_sklearn = model.predict_proba(rows)
    diff = float(np.abs(p_onnx.astype(np.float64) - p_sklearn).max())
    agree = float((labels(p_onnx) == labels(p_sklearn)).mean())
    log.info(
        "ONNX parity on %d rows: max |p_onnx - p_sklearn| = %.3g, labels agree %.4f",
        len(rows),
        diff,
        agree,
    )
    if diff > tolerance or agree < 1.0:
        raise StageError(
            f"ONNX export disagrees with sklearn on {len(rows)} rows: max probability "
            f"difference {diff:.3g} (limit {tolerance:g}), label agreement {agree:.4f}"
        )
    return {"onnx_max_abs_diff": float(f"{diff:.3g}"), "onnx_label_agreement": agree}


def csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    return buf.getvalue().encode()


def run(
    params: dict[str, Any], model_path: Path = MODEL, test_path: Path = TEST, out: Path = REPORTS
) -> dict[str, float]:
    """Evaluate the artifact at ``model_path`` on ``test_path``; return the metrics written."""
    model, schema, metadata = artifact.unpack(model_path.read_bytes())
    features = [f["name"] for f in schema["features"]]
    target, classes = schema["target"], list(metadata["classes"])
    test = categorical_as_object(pd.read_parquet(test_path), schema)
    x, y = test[features], test[target].to_numpy()
    log.info("read %s (%s) and %s: %d rows", model_path, metadata["estimator"], test_path, len(x))

    proba = model.predict_proba(x)
    scores = {**metrics(y, proba, classes), "n_test": len(x)}
    if metadata["onnx"] is not None:
        sampled = sample_rows(schema, int(params["onnx_parity_rows"]), int(params["seed"]))
        rows = pd.concat([x, sampled], ignore_index=True)
        scores.update(onnx_parity(model, metadata, rows, float(params["onnx_tolerance"])))
    log.info("metrics: %s", scores)
    pred = np.asarray(classes)[labels(proba)]
    confusion = pd.DataFrame({"actual": y, "predicted": pred})
    importance = permutation_importance(
        model,
        x,
        y,
        scoring="neg_log_loss",
        n_repeats=int(params["importance_repeats"]),
        random_state=int(params["seed"]),
        n_jobs=1,
    )
    ranked = pd.DataFrame({"feature": features, "importance": importance.importances_mean})
    ranked = ranked.sort_values("importance", ascending=False, kind="stable")
    write_outputs(
        {
            out / "metrics.json": (json.dumps(scores, indent=2) + "\n").encode(),
            out / "plots" / "confusion.csv": csv_bytes(confusion),
            out / "plots" / "roc.csv": csv_bytes(
                roc_table(y, proba, classes, int(params["roc_points"]))
            ),
            out / "plots" / "importance.csv": csv_bytes(ranked),
        }
    )
    return scores


if __name__ == "__main__":
    main_wrapper("evaluate", lambda: run(load_params("evaluate")))
