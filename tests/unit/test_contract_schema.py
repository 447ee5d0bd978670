"""Unit: the schema document an artifact carries (contract/schema.py) is checked field by field."""

import pytest

from contract.schema import ContractError, Feature, Schema

GOOD = {
    "task": "classification",
    "target": "y",
    "classes": [0, 1],
    "features": [
        {"name": "Längd (mm)", "type": "number", "min": 0.0, "max": 5.0, "nullable": True},
        {"name": "c", "type": "category", "categories": ["a", "b"], "nullable": False},
    ],
    "max_missing_features": 1,
}


def test_round_trip_keeps_every_field_and_label_types():
    schema = Schema.from_json(GOOD)
    assert schema.to_json() == GOOD
    assert schema.classes == (0, 1) and schema.names == ["Längd (mm)", "c"]
    assert schema.features[1] == Feature("c", "category", False, categories=("a", "b"))


def test_regression_has_no_classes():
    doc = {**GOOD, "task": "regression"}
    del doc["classes"]
    assert Schema.from_json(doc).to_json() == doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "ranking"}, "task 'ranking'"),
        ({"target": ""}, "target must be a non-empty string"),
        ({"features": []}, "features must be a non-empty list"),
        ({"classes": ["a"]}, "at least two distinct classes"),
        ({"classes": ["a", 1]}, "all strings or all integers"),
        ({"classes": [True, False]}, "all strings or all integers"),
        ({"max_missing_features": -1}, "non-negative integer"),
        ({"target": "c"}, "distinct and not the target"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(change, message):
    with pytest.raises(ContractError, match=message):
        Schema.from_json({**GOOD, **change})


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "x", "type": "number", "min": 1, "max": 1}, "finite numbers min < max"),
        ({"name": "x", "type": "number", "min": 0, "max": float("inf")}, "finite"),
        ({"name": "x", "type": "category", "categories": []}, "distinct string categories"),
        ({"name": "x", "type": "category", "categories": ["a", "a"]}, "distinct string"),
        ({"name": "x", "type": "text"}, "type 'text'"),
        ({"name": "", "type": "number"}, "non-empty string name"),
        ({"name": "x", "type": "number", "min": 0, "max": 1, "nullable": "yes"}, "nullable"),
    ],
)
def test_bad_features_are_refused(feature, message):
    with pytest.raises(ContractError, match=message):
        Schema.from_json({**GOOD, "features": [feature]})
