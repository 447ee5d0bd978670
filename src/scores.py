"""Metrics and plot tables by task, as pure functions of truth and answers.

Classification: accuracy, balanced accuracy, macro F1, ROC AUC (binary: of the positive class,
the last in class order; multiclass: one-vs-rest macro over the classes the split holds) and log
loss; plots are the confusion pairs and per-class ROC curves. Regression: RMSE, MAE and R²;
plots are predicted against actual, and residuals. A metric the split cannot define (AUC with
one class present, R² on one row) is null, never a crash.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
    roc_curve,
)

from contract.labels import labels

DIGITS = 6


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DIGITS)


def answered(proba: np.ndarray, classes: list[Any]) -> np.ndarray:
    """The class each row names, by the contract's label rule."""
    return np.asarray(classes, dtype=object)[labels(proba)]


def label_array(values: Any) -> np.ndarray:
    """Labels as sklearn's metrics take them: strings as objects, integer classes as int64
    (an object array of integers is a target type the metrics refuse)."""
    array = np.asarray(values, dtype=object)
    if len(array) and all(isinstance(v, int) and not isinstance(v, bool) for v in array):
        return array.astype(np.int64)
    return array


def roc_classes(y_true: np.ndarray, classes: list[Any]) -> list[int]:
    """Indices of the classes whose ROC the split defines (present and absent somewhere);
    for two classes, the positive (last) one only."""
    candidates = [len(classes) - 1] if len(classes) == 2 else range(len(classes))
    out = []
    for i in candidates:
        hits = int((y_true == classes[i]).sum())
        if 0 < hits < len(y_true):
            out.append(i)
    return out


def classification(y_true: np.ndarray, proba: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """The classification metrics, rounded so diffs are stable."""
    y_true = label_array(y_true)
    pred = label_array(answered(proba, classes))
    aucs = [roc_auc_score(y_true == classes[i], proba[:, i]) for i in roc_classes(y_true, classes)]
    return {
        "accuracy": _round(accuracy_score(y_true, pred)),
        "balanced_accuracy": _round(balanced_accuracy_score(y_true, pred)),
        "f1_macro": _round(f1_score(y_true, pred, average="macro", labels=sorted(set(y_true)))),
        "roc_auc": _round(float(np.mean(aucs))) if aucs else None,
        "log_loss": _round(log_loss(y_true, proba, labels=classes)),
    }


def regression(y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R² (null on fewer than two rows)."""
    return {
        "rmse": _round(math.sqrt(mean_squared_error(y_true, pred))),
        "mae": _round(mean_absolute_error(y_true, pred)),
        "r2": _round(r2_score(y_true, pred)) if len(y_true) > 1 else None,
    }


def roc_table(
    y_true: np.ndarray, proba: np.ndarray, classes: list[Any], points: int
) -> pd.DataFrame:
    """Long table (class, fpr, tpr): each defined ROC on a common false-positive-rate grid."""
    grid = np.linspace(0.0, 1.0, points)
    parts = []
    y_true = np.asarray(y_true, dtype=object)
    for i in roc_classes(y_true, classes):
        fpr, tpr, _ = roc_curve(y_true == classes[i], proba[:, i])
        parts.append(
            pd.DataFrame({"class": str(classes[i]), "fpr": grid, "tpr": np.interp(grid, fpr, tpr)})
        )
    if not parts:
        return pd.DataFrame({"class": pd.Series(dtype=str), "fpr": [], "tpr": []})
    return pd.concat(parts, ignore_index=True)


def prediction_pairs(y_true: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"actual": y_true, "predicted": pred})


def residuals(y_true: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"predicted": pred, "residual": np.asarray(y_true) - pred})
