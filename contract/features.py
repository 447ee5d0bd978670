"""The preprocessing spec (preprocess.json) and its numpy reader: raw values -> model inputs.

The spec is the fitted preprocessing as plain data: ``inputs`` (model-input column names in
order), ``numeric`` ``[{name, fill}]`` (a missing number takes its fill) and ``categorical``
``[{name, fill, categories}]`` (a missing value takes its fill, then one-hot over
``categories``; an unknown category is all zeros). Numeric columns come first, then each
category's one-hot block, in spec order. The pipeline proves the graph against sklearn through
this reader and the service computes its inputs with it, so both read the spec alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from contract.schema import ContractError

BY_COLUMN = 64  # from this many rows on, a column at a time (numpy) beats a row at a time


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class FeatureBuilder:
    """Turns raw rows or columns into the float32 matrix the ONNX graph takes.

    ``names`` is the order of values in a row (the schema's feature order).
    """

    def __init__(self, spec: Mapping[str, Any], names: Sequence[str]) -> None:
        try:
            self.inputs: list[str] = [str(n) for n in spec["inputs"]]
            numeric = [(str(n["name"]), float(n["fill"])) for n in spec["numeric"]]
            categorical = [
                (str(c["name"]), str(c["fill"]), [str(v) for v in c["categories"]])
                for c in spec["categorical"]
            ]
        # a fill past float range (OverflowError); JSON nested deeper than str() can go
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ContractError(f"preprocess spec is malformed: {exc!r}") from None
        position = {name: i for i, name in enumerate(names)}
        unknown = [n for n, *_ in numeric + categorical if n not in position]
        if unknown:
            raise ContractError(f"preprocess spec names columns not in the schema: {unknown}")
        self._numeric = [(position[n], n, fill) for n, fill in numeric]
        offset = len(numeric)
        self._categorical: list[tuple[int, str, str, dict[str, int]]] = []
        for name, fill, cats in categorical:
            columns = {c: offset + i for i, c in enumerate(cats)}
            self._categorical.append((position[name], name, fill, columns))
            offset += len(cats)
        if offset != len(self.inputs):
            raise ContractError(
                f"preprocess spec has {offset} columns for {len(self.inputs)} inputs"
            )

    def rows(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """One float32 row per instance; each instance lists its values in schema order."""
        if len(rows) >= BY_COLUMN:
            columns = list(zip(*rows, strict=True))
            return self._matrix(len(rows), lambda at, _: columns[at])
        out = np.zeros((len(rows), len(self.inputs)), np.float32)
        numeric, categorical = self._numeric, self._categorical
        for i, row in enumerate(rows):
            out_row = out[i]
            for j, (at, _, fill) in enumerate(numeric):
                value = row[at]
                out_row[j] = fill if value is None else value
            for at, _, fill, columns in categorical:
                value = row[at]
                column = columns.get(fill if value is None else value)
                if column is not None:
                    out_row[column] = 1.0
        return out

    def columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The same matrix from whole columns (numbers with NaN or None for missing; categories
        as strings with None or NaN for missing), vectorised for large tables."""
        n = len(next(iter(columns.values()))) if columns else 0
        return self._matrix(n, lambda _, name: columns[name])

    def _matrix(self, n: int, column: Callable[[int, str], Any]) -> np.ndarray:
        """The matrix of ``n`` rows from ``column(position in a row, name)``."""
        out = np.zeros((n, len(self.inputs)), np.float32)
        for j, (at, name, fill) in enumerate(self._numeric):
            values = np.asarray(column(at, name), dtype=np.float64)  # None becomes NaN
            out[:, j] = np.where(np.isnan(values), fill, values)
        for at, name, fill, index in self._categorical:
            values = column(at, name)
            if isinstance(values, np.ndarray):
                values = values.tolist()
            codes = np.fromiter(
                (index.get(fill if _is_missing(v) else v, -1) for v in values),
                dtype=np.int64,
                count=n,
            )
            hit = codes >= 0
            out[np.flatnonzero(hit), codes[hit]] = 1.0
        return out
