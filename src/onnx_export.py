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

log = logging.getLogger("lockserve.pipeline")


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
