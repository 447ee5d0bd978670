"""The pinned lockserve model as an MLflow pyfunc: the code MLflow runs ("models from code").

MLflow executes this file when it loads the exported model (``mlflow.pyfunc.load_model``,
``mlflow models serve``, ``spark_udf``); it needs numpy, pandas, onnxruntime, MLflow and the
artifact contract (``contract/``, shipped in the model's ``code/`` folder), nothing else of
lockserve. Loading checks the model zip (the MLflow artifact ``model``) against the md5 in the
model's config, which the export sets to the md5 dvc.lock pinned, then reads the graph and the
preprocessing spec from it. ``predict`` takes a DataFrame of the schema's columns and refuses
(one ``MlflowException``, HTTP 400 when served) any row lockserve's ``/predict`` would refuse:
a value missing where the column is not nullable, a number outside the schema's range or not a
number, a category outside its domain, more values missing than ``max_missing_features``.
Valid rows are answered as lockserve's batch scoring answers them: ``label`` and
``proba_<class>`` per class (classification), or ``value`` (regression).
"""

import hashlib
import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from contract.artifact import OUTPUTS, read
from contract.features import FeatureBuilder
from contract.labels import labels
from contract.schema import ContractError, Feature, Schema

ARTIFACT = "model"  # the MLflow artifact: the verified model zip
SHOWN_ROWS = 5  # refused rows named in the error, at most


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _column(frame: pd.DataFrame, feature: Feature) -> tuple[np.ndarray, list[str | None]]:
    """A column as the features reader takes it (float64 with NaN for a number, objects with
    None for a category) and, per row, why lockserve would refuse its value (None if it would
    not)."""
    n = len(frame)
    if feature.name not in frame.columns:  # an optional column left out: every value missing
        values = np.full(n, np.nan) if feature.type == "number" else np.full(n, None, object)
        return values, [None] * n
    column = frame[feature.name]
    problems: list[str | None] = [None] * n
    if feature.type == "number":
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
            column.dtype
        ):
            values = column.to_numpy(dtype="float64", na_value=np.nan)
        else:
            raw = column.to_numpy(dtype=object)
            values = np.full(n, np.nan)
            for i, value in enumerate(raw.tolist()):
                if _missing(value):
                    continue
                if _number(value):
                    values[i] = float(value)
                else:
                    problems[i] = f"{value!r} is not a number"
        for i in np.flatnonzero(
            ~np.isnan(values) & ~((values >= feature.min) & (values <= feature.max))
        ):
            problems[i] = f"{float(values[i])!r} is outside [{feature.min!r}, {feature.max!r}]"
        return values, problems
    domain = set(feature.categories)
    values = np.full(n, None, object)
    for i, value in enumerate(column.to_numpy(dtype=object).tolist()):
        if _missing(value):
            continue
        if isinstance(value, str) and value in domain:
            values[i] = value
        else:
            allowed = ", ".join(repr(c) for c in feature.categories)
            problems[i] = f"{value!r} is not one of {allowed}"
    return values, problems


class LockserveModel(mlflow.pyfunc.PythonModel):
    """The pinned graph and preprocessing spec of one verified lockserve model zip."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Verify the model zip against the configured md5, then open its graph."""
        path = Path(context.artifacts[ARTIFACT])
        data = path.read_bytes()
        expected = (context.model_config or {}).get("md5")
        found = hashlib.md5(data).hexdigest()
        if found != expected:
            raise MlflowException(
                f"{path.name} has md5 {found}, this model was exported for md5 {expected}: "
                "the model was changed; not loaded"
            )
        try:
            artifact = read(data)
        except ContractError as exc:
            raise MlflowException(f"{path.name}: {exc}") from None
        if artifact.onnx is None:
            raise MlflowException(f"{path.name} has no ONNX graph; this model runs the graph")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as each lockserve worker runs it
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            artifact.onnx, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._output = OUTPUTS[artifact.task]
        self._schema: Schema = artifact.schema
        self._features = FeatureBuilder(artifact.preprocess, artifact.schema.names)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """One answer per row, in order; MlflowException naming the rows lockserve refuses."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        schema = self._schema
        absent = [f.name for f in schema.features if not f.nullable and f.name not in frame]
        if absent:
            raise MlflowException(
                f"missing required column(s) {', '.join(map(repr, absent))}",
                INVALID_PARAMETER_VALUE,
            )
        n = len(frame)
        columns: dict[str, np.ndarray] = {}
        refused: dict[int, str] = {}
        missing = np.zeros(n, dtype=np.int64)
        for feature in schema.features:
            values, problems = _column(frame, feature)
            columns[feature.name] = values
            gone = (
                np.isnan(values)
                if feature.type == "number"
                else np.array([v is None for v in values.tolist()], dtype=bool)
            )
            missing += gone & np.array([p is None for p in problems], dtype=bool)
            if not feature.nullable:
                for i in np.flatnonzero(gone):
                    problems[i] = problems[i] or "a value is required (the column is not nullable)"
            for i, problem in enumerate(problems):
                if problem is not None and i not in refused:
                    refused[i] = f"row {i}, column {feature.name!r}: {problem}"
        limit = schema.max_missing_features
        if limit is not None:
            for i in np.flatnonzero(missing > limit):
                refused.setdefault(
                    int(i),
                    f"row {i}: {missing[i]} of {len(schema.features)} feature values are "
                    f"missing; the model was trained only on rows missing at most {limit} "
                    "(max_missing_features)",
                )
        if refused:
            shown = [refused[i] for i in sorted(refused)[:SHOWN_ROWS]]
            more = " ..." if len(refused) > SHOWN_ROWS else ""
            raise MlflowException(
                f"{len(refused)} of {n} rows refused: " + "; ".join(shown) + more,
                INVALID_PARAMETER_VALUE,
            )
        matrix = self._features.columns(columns)
        if n:
            out = self._session.run([self._output], {self._input: matrix})[0]
        else:
            out = np.zeros((0, max(len(schema.classes), 1)), np.float32)
        if schema.task == "regression":
            return pd.DataFrame({"value": out.reshape(-1).astype("float64")}, index=frame.index)
        classes = list(schema.classes)
        answer: dict[str, Any] = {"label": [classes[k] for k in labels(out).tolist()]}
        for k, name in enumerate(classes):
            answer[f"proba_{name}"] = out[:, k].astype("float64")
        return pd.DataFrame(answer, index=frame.index)


mlflow.models.set_model(LockserveModel())
