"""Unit: model inputs from preprocess.json (imputation, one-hot, unknown categories)."""

import numpy as np
import pytest

from api.features import FeatureBuilder

SPEC = {
    "inputs": ["a", "b", "c_x", "c_y", "c_missing"],
    "numeric": [{"name": "a", "fill": 1.5}, {"name": "b", "fill": -2.0}],
    "categorical": [{"name": "c", "fill": "missing", "categories": ["x", "y", "missing"]}],
}


def test_values_fills_and_one_hot():
    rows = [{"a": 3.0, "b": 4.0, "c": "y"}, {"a": None, "b": 0.5, "c": None}]
    out = FeatureBuilder(SPEC).matrix(rows)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[3, 4, 0, 1, 0], [1.5, 0.5, 0, 0, 1]])


def test_unknown_category_is_all_zero():
    out = FeatureBuilder(SPEC).matrix([{"a": 1.0, "b": 1.0, "c": "z"}])
    np.testing.assert_array_equal(out[0, 2:], [0, 0, 0])


def test_objects_with_attributes_are_read_like_dicts():
    class Row:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    out = FeatureBuilder(SPEC).matrix([Row(a=2.0, b=None, c="x")])
    np.testing.assert_array_equal(out, [[2, -2, 1, 0, 0]])


def test_spec_must_cover_every_input():
    with pytest.raises(ValueError, match="3 columns for 5 inputs"):
        FeatureBuilder({**SPEC, "numeric": [], "categorical": SPEC["categorical"]})
