"""Prediction core: validated instances in, labels and class probabilities out (sklearn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


class SklearnPredictor:
    """Runs the artifact's sklearn Pipeline on rows shaped by its input schema."""

    backend = "sklearn"

    def __init__(self, pipeline: Any, schema: dict[str, Any]) -> None:
        self._pipeline = pipeline
        self._features = [f["name"] for f in schema["features"]]
        self._numeric = {f["name"] for f in schema["features"] if f["type"] == "number"}
        self.classes = [str(c) for c in pipeline.classes_]

    def frame(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """Rows as the pipeline expects them: schema column order, missing values as NaN."""
        columns = {}
        for name in self._features:
            values = [row[name] for row in rows]
            if name in self._numeric:
                columns[name] = np.array([np.nan if v is None else v for v in values], float)
            else:
                columns[name] = np.array([np.nan if v is None else v for v in values], object)
        return pd.DataFrame(columns)

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[Prediction]:
        proba = self._pipeline.predict_proba(self.frame(rows))
        best = proba.argmax(axis=1)
        return [
            Prediction(self.classes[i], dict(zip(self.classes, map(float, p), strict=True)))
            for i, p in zip(best, proba, strict=True)
        ]
