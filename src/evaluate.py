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

from src import artifact
from src.featurize import categorical_as_object
from src.onnx_export import labels, parity, sample_rows
from src.stage import load_params, main_wrapper, write_outputs

log = logging.getLogger("lockserve.pipeline")

MODEL = Path("models/model.zip")
TEST = Path("data/prepared/test.parquet")
REPORTS = Path("reports")
DIGITS = 6


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
    if metadata["onnx"] is not None:  # train gated it on random rows; check the test split too
        gate = metadata["onnx_gate"]
        sampled = sample_rows(schema, int(gate["rows"]), int(params["seed"]))
        rows = pd.concat([x, sampled], ignore_index=True)
        diff, agree = parity(
            model, metadata["onnx"], metadata["preprocess"], rows, float(gate["tolerance"])
        )
        scores.update(onnx_max_abs_diff=float(f"{diff:.3g}"), onnx_label_agreement=agree)
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
