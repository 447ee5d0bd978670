"""Stage evaluate: score the artifact on the held-out split; write metrics and plot data.

Reads models/model.zip and data/prepared/test.parquet (raw features, exactly what a client
sends) and the ``evaluate`` params; writes reports/metrics.json and the tables behind
`dvc plots show` (reports/plots/): predictions.csv (actual, predicted) and curves.csv (ROC per
class, or residuals), on at most ``plot_rows`` rows, and importance.csv (permutation importance
on at most ``importance_rows`` rows). Metrics always cover the whole split.
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
from sklearn.metrics import log_loss, make_scorer, mean_squared_error

from contract import artifact
from src import onnx_export, scores
from src.stage import StageError, load_params, main_wrapper, write_outputs
from src.tables import categorical_as_object

log = logging.getLogger("lockserve.pipeline")

MODEL = Path("models/model.zip")
TEST = Path("data/prepared/test.parquet")
REPORTS = Path("reports")
KEYS = {"seed", "importance_repeats", "importance_rows", "roc_points", "plot_rows"}


def csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue().encode()


def _positive_int(params: dict[str, Any], key: str) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StageError(f"params: evaluate.{key} must be a positive integer")
    return value


def sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most ``size`` of ``n`` rows."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def importance(
    model: Any, task: str, classes: list[Any], x: pd.DataFrame, y: np.ndarray, params: dict
) -> pd.DataFrame:
    """Permutation importance (log-loss or RMSE increase) on a seeded sample of the split."""
    pick = sample(len(x), _positive_int(params, "importance_rows"), params["seed"])
    if task == "classification":
        scorer = make_scorer(
            log_loss, greater_is_better=False, response_method="predict_proba", labels=classes
        )
    else:
        scorer = make_scorer(
            lambda t, p: float(np.sqrt(mean_squared_error(t, p))), greater_is_better=False
        )
    result = permutation_importance(
        model,
        x.iloc[pick],
        y[pick],
        scoring=scorer,
        n_repeats=_positive_int(params, "importance_repeats"),
        random_state=params["seed"],
    )
    ranked = pd.DataFrame({"feature": list(x.columns), "importance": result.importances_mean})
    return ranked.sort_values("importance", ascending=False, kind="stable")


def run(
    params: dict[str, Any], model_path: Path = MODEL, test_path: Path = TEST, out: Path = REPORTS
) -> dict[str, Any]:
    """Evaluate the artifact at ``model_path`` on ``test_path``; return the metrics written."""
    unknown = set(params) - KEYS
    if unknown:
        raise StageError(f"params: evaluate has unknown key(s) {sorted(unknown)}")
    if not isinstance(params.get("seed"), int) or not 0 <= params["seed"] < 2**32:
        raise StageError("params: evaluate.seed must be an integer from 0 to 2**32 - 1")
    points = _positive_int(params, "roc_points")
    try:
        parts = artifact.read(model_path.read_bytes())
    except ValueError as exc:
        raise StageError(f"{model_path}: {exc}") from None
    model, schema, metadata = parts.sklearn_pipeline(), parts.schema, parts.metadata
    task, classes = schema.task, parts.classes
    categorical = [f.name for f in schema.features if f.type == "category"]
    test = categorical_as_object(pd.read_parquet(test_path), categorical)
    x, y = test[schema.names], test[schema.target].to_numpy()
    log.info("read %s (%s) and %s: %d rows", model_path, metadata["estimator"], test_path, len(x))

    output = onnx_export.sklearn_output(model, task, x)
    if task == "classification":
        figures: dict[str, Any] = scores.classification(y, output, classes)
        pred = scores.answered(output, classes)
        curves = scores.roc_table(y, output, classes, points)
    else:
        figures = scores.regression(y, output)
        pred = output
        curves = None
    figures["n_test"] = len(x)
    if parts.onnx is not None:  # train gated it on sampled rows; check the test split too
        gate = metadata["onnx_gate"]
        sampled = onnx_export.sample_rows(schema, int(gate["rows"]), params["seed"], pool=x)
        rows = pd.concat([x, sampled], ignore_index=True)
        checked = onnx_export.parity(  # sklearn's answers on the split: `output`, not again
            model, parts.onnx, parts.preprocess, schema, rows, float(gate["limit"]), output
        )
        figures["onnx_max_abs_diff"] = checked["max_abs_diff"]
        if task == "classification":
            figures["onnx_label_agreement"] = checked["label_agreement"]
    log.info("metrics: %s", figures)
    ranked = importance(model, task, classes, x, y, params)
    shown = sample(len(x), _positive_int(params, "plot_rows"), params["seed"])
    if len(shown) < len(x):
        log.info("plots show a seeded sample of %d of %d test rows", len(shown), len(x))
    if curves is None:
        curves = scores.residuals(y[shown], np.asarray(pred)[shown])
    write_outputs(
        {
            out / "metrics.json": (json.dumps(figures, indent=2) + "\n").encode(),
            out / "plots" / "predictions.csv": csv_bytes(
                scores.prediction_pairs(y[shown], np.asarray(pred)[shown])
            ),
            out / "plots" / "curves.csv": csv_bytes(curves),
            out / "plots" / "importance.csv": csv_bytes(ranked),
        }
    )
    return figures


if __name__ == "__main__":
    main_wrapper("evaluate", lambda: run(load_params("evaluate")))
