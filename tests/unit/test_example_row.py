"""The artifact's example row: the first training row with no value missing, else the first,
numbers as floats, categories as strings and missing values as None (src/train.py)."""

import numpy as np
import pandas as pd

from contract.schema import Feature, Schema
from src.train import example_row

SCHEMA = Schema(
    "classification",
    "y",
    (
        Feature("n", "number", True, min=0.0, max=10.0),
        Feature("c", "category", True, categories=("a", "b")),
    ),
    ("p", "q"),
)


def test_the_first_row_with_every_feature_present():
    frame = pd.DataFrame(
        {"n": [np.nan, 2, 3], "c": ["a", None, "b"], "y": ["p", "q", "p"], "other": [1, 2, 3]}
    )
    row = example_row(frame, SCHEMA)
    assert row == {"n": 3.0, "c": "b"}
    assert type(row["n"]) is float and type(row["c"]) is str


def test_without_a_complete_row_the_first_with_its_missing_values_as_none():
    frame = pd.DataFrame({"n": [np.nan, 2.5], "c": ["a", None], "y": ["p", "q"]})
    assert example_row(frame, SCHEMA) == {"n": None, "c": "a"}
