"""One partition of a table, scored: the rows checked by the rules POST /predict applies, the
valid ones run through the pinned graph, every row answered in order.

A :class:`Scorer` is built from the verified model bytes on each Dask worker (the md5 is
checked again before a byte is read) and kept for every partition that worker scores. A cheap
columnar check finds the rows that may break the input schema or the row rule; only those go
through the service's own validator (the request model generated from the schema, and
``api.core.sparse_rows``), which decides and words the error, so a row the API would refuse
gets the API's message in ``error`` and no prediction, and a row it would take is scored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from api import artifact, schemas
from api.backends import OnnxBackend, decide
from api.core import sparse_rows
from api.problems import validation_details
from contract.schema import Schema

ERROR = "error"


class ScoringError(Exception):
    """A table or a model that cannot be scored; the message says why."""


def output_columns(schema: Schema) -> list[str]:
    """The answer's columns: ``label`` and ``proba_<class>`` for each class, or ``value``."""
    if schema.task == "classification":
        return ["label", *(f"proba_{c}" for c in schema.classes)]
    return ["value"]


def empty_answer(schema: Schema, kept: pd.DataFrame) -> pd.DataFrame:
    """The scored frame's columns and dtypes, for Dask's ``meta``."""
    out = kept.iloc[:0].copy()
    for name in output_columns(schema):
        out[name] = pd.Series(dtype="float64")
    if schema.task == "classification":
        is_int = bool(schema.classes) and isinstance(schema.classes[0], int)
        out["label"] = pd.Series(dtype="Int64" if is_int else "string")
    out[ERROR] = pd.Series(dtype="string")
    return out


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


class Scorer:
    """The verified model of one md5, ready to score partitions."""

    def __init__(self, data: bytes, md5: str) -> None:
        try:
            loaded = artifact.load(data, md5)
        except artifact.ArtifactError as exc:
            raise ScoringError(str(exc)) from None
        if loaded.onnx is None:
            raise ScoringError(
                "the artifact has no ONNX graph (its estimator could not be converted): "
                "batch scoring runs the graph only"
            )
        self.schema = loaded.schema
        self.classes = loaded.classes
        # the service's own ONNX path: one single-threaded session, features from the spec
        self._backend = OnnxBackend(loaded)
        self._validate = schemas.build(self.schema, 1)[0].model_validate

    # -- which rows the API would refuse, and why
    def _suspects(self, values: dict[str, np.ndarray], missing: np.ndarray) -> np.ndarray:
        """Rows that may break the schema or the row rule: a superset of those the API
        refuses (anything not plainly valid is handed to the validator)."""
        n = len(missing)
        suspect = np.zeros(n, dtype=bool)
        for j, f in enumerate(self.schema.features):
            column, absent = values[f.name], missing[:, j]
            if f.type == "number":
                if column.dtype.kind == "f":
                    inside = (column >= f.min) & (column <= f.max)
                else:
                    inside = np.zeros(n, dtype=bool)  # text or objects: the validator decides
                ok = inside | (absent & f.nullable)
            else:
                ok = pd.Series(column).isin(f.categories).to_numpy() | (absent & f.nullable)
            suspect |= ~ok
        limit = self.schema.max_missing_features
        if limit is not None:
            suspect |= missing.sum(axis=1) > limit
        return suspect

    def _refusal(self, row: dict[str, Any]) -> str | None:
        """The API's message for one row, or None when the API takes it."""
        try:
            self._validate({"instances": [row]})
        except ValidationError as exc:
            details = validation_details(exc.errors())
        else:
            details = sparse_rows(self.schema, [tuple(row.values())])
        return (
            "; ".join(
                f"field {d['field']!r}: {d['message']}" if "field" in d else d["message"]
                for d in details
            )
            or None
        )

    # -- a partition
    def __call__(self, frame: pd.DataFrame, keep: list[str], text: bool = False) -> pd.DataFrame:
        """``frame``'s rows, in order: the ``keep`` columns, the answer, and ``error``. With
        ``text`` (a CSV read as strings) numbers are read from their text as the pipeline reads
        them; text that is no number stays text, for the validator to refuse."""
        schema = self.schema
        n = len(frame)
        values = {
            f.name: _as_values(
                _numbers_from_text(frame[f.name]) if text and f.type == "number" else frame[f.name],
                f.type,
            )
            for f in schema.features
        }
        missing = (
            np.column_stack([_absent(values[f.name]) for f in schema.features])
            if n
            else np.zeros((0, len(schema.features)), dtype=bool)
        )
        errors = np.full(n, None, dtype=object)
        for i in np.flatnonzero(self._suspects(values, missing)):
            row = {
                f.name: None if missing[i, j] else _plain(values[f.name][i])
                for j, f in enumerate(schema.features)
            }
            errors[i] = self._refusal(row)
        good = np.array([e is None for e in errors], dtype=bool)
        out = frame[keep].reset_index(drop=True).copy()
        answer = np.full(
            (n, len(output_columns(schema)) - (schema.task == "classification")), np.nan
        )
        chosen = np.full(n, None, dtype=object)
        if good.any():
            columns = {name: np.asarray(v)[good] for name, v in values.items()}
            result = self._backend.predict_columns(_for_features(columns, schema))
            if schema.task == "classification":
                answer[good] = result
                chosen[good] = decide(schema.task, self.classes, result)
            else:
                answer[good, 0] = result
        if schema.task == "classification":
            is_int = isinstance(self.classes[0], int)
            out["label"] = pd.array(chosen.tolist(), dtype="Int64" if is_int else "string")
            for k, c in enumerate(self.classes):
                out[f"proba_{c}"] = answer[:, k].astype("float64")
        else:
            out["value"] = answer[:, 0].astype("float64")
        out[ERROR] = pd.array(errors.tolist(), dtype="string")
        return out


def _as_values(column: pd.Series, kind: str) -> np.ndarray:
    """A column as numpy: float64 for a numeric column, else objects (missing as None)."""
    if (
        kind == "number"
        and pd.api.types.is_numeric_dtype(column.dtype)
        and not (pd.api.types.is_bool_dtype(column.dtype))
    ):
        return column.to_numpy(dtype="float64", na_value=np.nan)
    return column.astype(object).where(column.notna(), None).to_numpy()


def _numbers_from_text(column: pd.Series) -> pd.Series:
    """Text read as ``pd.to_numeric`` reads it (float64); any text that is not a number makes
    the column objects, that text kept as it was."""
    parsed = pd.to_numeric(column, errors="coerce").astype("float64")
    unread = parsed.isna() & column.notna()
    if not unread.any():
        return parsed
    return parsed.astype(object).where(~unread, column)


def _absent(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.fromiter((_missing(v) for v in values), dtype=bool, count=len(values))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a JSON body would carry."""
    return value.item() if isinstance(value, np.generic) else value


def _for_features(columns: dict[str, np.ndarray], schema: Schema) -> dict[str, np.ndarray]:
    """Valid rows' columns as the features reader takes them: numbers as float64 (NaN
    missing), categories as objects."""
    out = {}
    for f in schema.features:
        column = columns[f.name]
        if f.type == "number" and column.dtype.kind != "f":
            out[f.name] = np.array([np.nan if _missing(v) else v for v in column], dtype="float64")
        else:
            out[f.name] = column
    return out
