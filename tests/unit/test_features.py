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


def test_label_rule_breaks_float_ties_by_class_order_on_both_sides():
    from api.backends import labels as api_labels
    from src.onnx_export import labels as src_labels

    proba = np.array(
        [
            [0.5, 0.5, 0.0],  # exact tie: first class
            [0.49999997, 0.50000003, 0.0],  # a float32 "tie": still the first class
            [0.2, 0.3, 0.5],  # clear winner
            [0.4, 0.4000011, 0.2],  # more than 1e-6 apart: the higher one
        ]
    )
    assert api_labels(proba).tolist() == src_labels(proba).tolist() == [0, 0, 2, 1]


def test_service_features_equal_the_pipeline_reading_of_the_spec(artifacts):
    """api/features.py and src/onnx_export.features read preprocess.json alike."""
    import pandas as pd

    from src import artifact
    from src.onnx_export import features, sample_rows

    _, schema, meta = artifact.unpack(artifacts["v1"])
    rows = sample_rows(schema, 500, seed=3)
    records = [
        {k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")
    ]
    np.testing.assert_array_equal(
        FeatureBuilder(meta["preprocess"]).matrix(records), features(meta["preprocess"], rows)
    )
