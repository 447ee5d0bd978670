"""Inference backends: rows of raw values in, class probabilities or values out.

A row is a sequence of feature values in the schema's order (None where missing). ONNX
Runtime is used whenever the artifact carries a graph; otherwise, or when asked, the pickled
sklearn pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from api.artifact import Artifact
from contract.artifact import OUTPUTS
from contract.features import FeatureBuilder
from contract.labels import label_list

log = logging.getLogger("lockserve.backends")


class Backend(Protocol):
    name: str
    task: str  # classification | regression
    classes: list[Any]  # classification: in probability-column order; regression: []
    inline: bool  # fast enough to call on the event loop (api/runners.py)
    batches: bool  # gains from running many requests' rows at once

    def predict(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Probabilities (rows x classes) for classification, values (rows) for regression."""
        ...


class OnnxBackend:
    """preprocess.json features (numpy) -> onnxruntime, single-threaded per worker."""

    name = "onnx"
    inline = True  # microseconds a row: no thread hop
    batches = False

    def __init__(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one worker per core does the parallelism
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            artifact.onnx, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._features = FeatureBuilder(artifact.preprocess, artifact.schema.names)
        self.task = artifact.task
        self._output = [OUTPUTS[self.task]]
        self.classes = artifact.classes

    def predict(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        return self._run(self._features.rows(rows))

    def predict_columns(self, columns: dict[str, Any]) -> np.ndarray:
        """The same answers from whole columns (batch scoring: a partition at a time)."""
        return self._run(self._features.columns(columns))

    def _run(self, matrix: np.ndarray) -> np.ndarray:
        out = self._session.run(self._output, {self._input: matrix})[0]
        return out if self.task == "classification" else out.reshape(-1)


class SklearnBackend:
    """The pickled sklearn Pipeline on a DataFrame of raw features."""

    name = "sklearn"
    inline = False
    batches = True  # a call's fixed milliseconds dwarf a row's cost

    def __init__(self, artifact: Artifact) -> None:
        import pandas as pd

        self._pd = pd
        self._pipeline = artifact.sklearn_pipeline()
        self.task = artifact.task
        self._names = artifact.schema.names
        self._numeric = [f.type == "number" for f in artifact.schema.features]
        self.classes = artifact.classes

    def frame(self, rows: Sequence[Sequence[Any]]) -> Any:
        """Rows as the pipeline expects them: schema column order, missing values as NaN."""
        columns = {}
        for i, name in enumerate(self._names):
            values = [np.nan if row[i] is None else row[i] for row in rows]
            columns[name] = np.array(values, float if self._numeric[i] else object)
        return self._pd.DataFrame(columns)

    def predict(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        frame = self.frame(rows)
        if self.task == "classification":
            return self._pipeline.predict_proba(frame)
        return np.asarray(self._pipeline.predict(frame), dtype=np.float64)


def decide(task: str, classes: list[Any], output: Any) -> list[Any]:
    """What a backend's output answers per row: a class (the label rule) or a value."""
    if task == "classification":
        return [classes[i] for i in label_list(output)]
    return output.tolist()


def predictions(task: str, classes: list[Any], output: Any, answered: list[Any]) -> list[dict]:
    """Per row {"label", "probabilities" by class name} or {"value"}."""
    if task == "classification":
        names = [str(c) for c in classes]
        return [
            {"label": label, "probabilities": dict(zip(names, p, strict=True))}
            for label, p in zip(answered, output.tolist(), strict=True)
        ]
    return [{"value": v} for v in answered]


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
