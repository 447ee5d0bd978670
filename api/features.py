"""Model inputs from validated instances: imputation and one-hot per preprocess.json (numpy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class FeatureBuilder:
    """Turns instances (objects or dicts with the schema's fields) into a float32 matrix."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.inputs: list[str] = list(spec["inputs"])
        self._numeric = [(n["name"], float(n["fill"])) for n in spec["numeric"]]
        offset = len(self._numeric)
        self._categorical = []
        for cat in spec["categorical"]:
            columns = {c: offset + i for i, c in enumerate(cat["categories"])}
            self._categorical.append((cat["name"], cat["fill"], columns))
            offset += len(columns)
        if offset != len(self.inputs):
            raise ValueError(f"preprocess spec has {offset} columns for {len(self.inputs)} inputs")

    def matrix(self, rows: Sequence[Any]) -> np.ndarray:
        """One float32 row per instance; a missing value takes its fill, unknown categories 0."""
        out = np.zeros((len(rows), len(self.inputs)), np.float32)
        for i, row in enumerate(rows):
            values = row if isinstance(row, dict) else row.__dict__
            out_row = out[i]
            for j, (name, fill) in enumerate(self._numeric):
                value = values[name]
                out_row[j] = fill if value is None else value
            for name, fill, columns in self._categorical:
                value = values[name]
                column = columns.get(fill if value is None else value)
                if column is not None:
                    out_row[column] = 1.0
        return out
