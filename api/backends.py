"""Inference backends: the same rows in, class probabilities out (ONNX Runtime or sklearn).

ONNX is used whenever the artifact carries a graph; otherwise, or when asked, sklearn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from api.artifact import Artifact
from api.features import FeatureBuilder

log = logging.getLogger("lockserve.backends")

TIE = 1e-6


def labels(proba: np.ndarray) -> np.ndarray:
    """The answered class per row: the first (in class order) within TIE of the highest.

    Part of the artifact contract, so the float32 ONNX and float64 sklearn backends name the
    same class when two probabilities tie.
    """
    return (proba >= proba.max(axis=1, keepdims=True) - TIE).argmax(axis=1)


class Backend(Protocol):
    name: str
    classes: list[str]

    def predict_proba(self, rows: Sequence[Any]) -> np.ndarray: ...


class OnnxBackend:
    """preprocess.json features (numpy) -> onnxruntime, single-threaded per worker."""

    name = "onnx"

    def __init__(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one worker per core does the parallelism
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            artifact.onnx, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._features = FeatureBuilder(artifact.preprocess)
        self.classes = [str(c) for c in artifact.metadata["classes"]]

    def predict_proba(self, rows: Sequence[Any]) -> np.ndarray:
        features = self._features.matrix(rows)
        return self._session.run(["probabilities"], {self._input: features})[0]


class SklearnBackend:
    """The pickled sklearn Pipeline on a DataFrame of raw features."""

    name = "sklearn"

    def __init__(self, artifact: Artifact) -> None:
        import pandas as pd

        self._pd = pd
        self._pipeline = artifact.sklearn_pipeline()
        self._features = [f["name"] for f in artifact.schema["features"]]
        self._numeric = {f["name"] for f in artifact.schema["features"] if f["type"] == "number"}
        self.classes = [str(c) for c in self._pipeline.classes_]

    def frame(self, rows: Sequence[Any]) -> Any:
        """Rows as the pipeline expects them: schema column order, missing values as NaN."""
        dicts = [row if isinstance(row, dict) else row.__dict__ for row in rows]
        columns = {}
        for name in self._features:
            values = [np.nan if d[name] is None else d[name] for d in dicts]
            columns[name] = np.array(values, float if name in self._numeric else object)
        return self._pd.DataFrame(columns)

    def predict_proba(self, rows: Sequence[Any]) -> np.ndarray:
        return self._pipeline.predict_proba(self.frame(rows))


def select(artifact: Artifact, wanted: str) -> Backend:
    """The backend asked for; ONNX falls back to sklearn (one log line) without a graph."""
    if wanted == "onnx":
        if artifact.onnx is not None:
            return OnnxBackend(artifact)
        log.warning(
            "artifact has no ONNX graph (the estimator could not be converted): serving with "
            "the sklearn backend"
        )
    return SklearnBackend(artifact)
