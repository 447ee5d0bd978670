"""The compiled half of the artifact: the estimator as ONNX, and preprocessing as plain data.

The service runs preprocessing (imputation, one-hot) from ``preprocess.json`` with numpy and
the estimator in onnxruntime, so it never needs to unpickle sklearn. ``features`` is the
pipeline's own reading of that spec, used by evaluate to prove parity with sklearn.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from src.stage import StageError

log = logging.getLogger("lockserve.pipeline")

# The label contract: the first class (in metadata.classes order) whose probability is within
# TIE of the highest, so float32 (ONNX) and float64 (sklearn) sums agree on ties.
TIE = 1e-6


def labels(proba: np.ndarray) -> np.ndarray:
    """Index of the answered class per row, by the label contract."""
    return (proba >= proba.max(axis=1, keepdims=True) - TIE).argmax(axis=1)


def preprocess_spec(transformer: ColumnTransformer) -> dict[str, Any]:
    """Fill values and categories of the fitted transformer, in its output column order."""
    numeric = transformer.named_transformers_["numeric"]
    categorical = transformer.named_transformers_["categorical"]
    imputer, onehot = categorical.named_steps["impute"], categorical.named_steps["onehot"]
    return {
        "inputs": [str(n) for n in transformer.get_feature_names_out()],
        "numeric": [
            {"name": str(name), "fill": float(fill)}
            for name, fill in zip(numeric.feature_names_in_, numeric.statistics_, strict=True)
        ],
        "categorical": [
            {"name": str(name), "fill": str(fill), "categories": [str(c) for c in cats]}
            for name, fill, cats in zip(
                imputer.feature_names_in_, imputer.statistics_, onehot.categories_, strict=True
            )
        ],
    }


def features(spec: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Model inputs (float32) for raw rows, following ``spec`` exactly as the service does."""
    columns = []
    for num in spec["numeric"]:
        values = pd.to_numeric(frame[num["name"]], errors="coerce").to_numpy(np.float64)
        columns.append(np.where(np.isnan(values), num["fill"], values))
    for cat in spec["categorical"]:
        values = frame[cat["name"]].astype(object).where(frame[cat["name"]].notna(), cat["fill"])
        for category in cat["categories"]:
            columns.append((values == category).to_numpy(np.float64))
    return np.column_stack(columns).astype(np.float32)


def export(estimator: Any, n_inputs: int) -> bytes | None:
    """The fitted estimator as ONNX bytes (float32 inputs, probabilities out), or None."""
    try:
        from skl2onnx import to_onnx

        model = to_onnx(
            estimator,
            np.zeros((1, n_inputs), np.float32),
            options={id(estimator): {"zipmap": False}},
        )
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many kinds for unsupported models
        log.warning(
            "no ONNX export (%s: %s); the artifact serves with sklearn only",
            type(exc).__name__,
            exc,
        )
        return None
    return model.SerializeToString()


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


def parity(
    model: Any, onnx_bytes: bytes, spec: dict[str, Any], rows: pd.DataFrame, tolerance: float
) -> tuple[float, float]:
    """Compare the ONNX path (spec features + onnxruntime) with sklearn on ``rows``.

    Return the largest probability difference and the share of equal labels; raise StageError
    above ``tolerance`` or on any label that differs, so a conversion bug can never ship.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs = features(spec, rows)
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
    return diff, agree
