"""Unit: model inputs from preprocess.json (contract/features.py): imputation, one-hot,
unknown categories, rows and columns read alike, and the label rule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.features import FeatureBuilder
from contract.labels import labels
from contract.schema import ContractError

SPEC = {
    "inputs": ["a", "b", "c_x", "c_y", "c_missing"],
    "numeric": [{"name": "a", "fill": 1.5}, {"name": "b", "fill": -2.0}],
    "categorical": [{"name": "c", "fill": "missing", "categories": ["x", "y", "missing"]}],
}
NAMES = ["c", "a", "b"]  # rows list values in schema order, which need not be the spec's


def test_values_fills_and_one_hot():
    rows = [("y", 3.0, 4.0), (None, None, 0.5)]
    out = FeatureBuilder(SPEC, NAMES).rows(rows)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[3, 4, 0, 1, 0], [1.5, 0.5, 0, 0, 1]])


def test_unknown_category_is_all_zero():
    out = FeatureBuilder(SPEC, NAMES).rows([("z", 1.0, 1.0)])
    np.testing.assert_array_equal(out[0, 2:], [0, 0, 0])


def test_columns_give_the_rows_matrix():
    rows = [("y", 3.0, None), (None, None, 0.5), ("z", 2.0, 1.0), ("x", np.nan, 7.0)]
    columns = {
        "c": np.array(["y", None, "z", "x"], dtype=object),
        "a": np.array([3.0, np.nan, 2.0, np.nan]),
        "b": np.array([np.nan, 0.5, 1.0, 7.0]),
    }
    builder = FeatureBuilder(SPEC, NAMES)
    by_rows = builder.rows([tuple(None if v is np.nan else v for v in r) for r in rows])
    np.testing.assert_array_equal(builder.columns(columns), by_rows)


def test_many_rows_read_a_column_at_a_time_alike():
    import random

    import contract.features as features

    rng = random.Random(0)
    rows = [
        (
            rng.choice(["x", "y", "z", None]),
            rng.choice([None, rng.uniform(-5, 5)]),
            rng.choice([None, rng.uniform(-5, 5)]),
        )
        for _ in range(3 * features.BY_COLUMN)
    ]
    builder = FeatureBuilder(SPEC, NAMES)
    by_column = builder.rows(rows)
    one_at_a_time = np.vstack([builder.rows([row]) for row in rows])
    np.testing.assert_array_equal(by_column, one_at_a_time)
    # as many rows as a request may carry, either side of where the two ways meet
    for n in (features.BY_COLUMN - 1, features.BY_COLUMN):
        np.testing.assert_array_equal(builder.rows(rows[:n]), one_at_a_time[:n])


def test_spec_must_cover_every_input():
    with pytest.raises(ContractError, match="3 columns for 5 inputs"):
        FeatureBuilder({**SPEC, "numeric": []}, NAMES)


def test_spec_naming_a_column_outside_the_schema_is_refused():
    with pytest.raises(ContractError, match=r"not in the schema: \['b'\]"):
        FeatureBuilder(SPEC, ["c", "a"])


def test_malformed_spec_is_a_contract_error():
    with pytest.raises(ContractError, match="malformed"):
        FeatureBuilder({"inputs": []}, NAMES)


def test_label_rule_breaks_float_ties_by_class_order():
    proba = np.array(
        [
            [0.5, 0.5, 0.0],  # exact tie: first class
            [0.49999997, 0.50000003, 0.0],  # a float32 "tie": still the first class
            [0.2, 0.3, 0.5],  # clear winner
            [0.4, 0.4000011, 0.2],  # more than 1e-6 apart: the higher one
        ]
    )
    assert labels(proba).tolist() == [0, 0, 2, 1]


@settings(max_examples=400, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    rows=st.integers(1, 10),
    classes=st.integers(1, 5),
    data=st.data(),
)
def test_label_list_is_the_label_rule(dtype, rows, classes, data):
    """The Python reading of a few rows names the class numpy's does, ties within TIE and
    values near float32's roundings included."""
    from contract.labels import TIE, label_list

    top = data.draw(st.floats(0.0, 1.0, width=32))
    near = st.one_of(
        st.floats(0.0, 1.0, width=32),
        st.sampled_from([top, top - TIE, top - TIE / 2, top - 2 * TIE, np.nextafter(top, 0)]),
        st.sampled_from([float("nan"), 1e-30, 3.0e3]),
    )
    values = data.draw(st.lists(near, min_size=rows * classes, max_size=rows * classes))
    proba = np.array(values, dtype=dtype).reshape(rows, classes)
    assert label_list(proba) == labels(proba).tolist()
