"""Unit: the declared raw schema and the row rules (pure functions on frames)."""

import logging

import numpy as np
import pandas as pd
import pytest

from src.raw_schema import (
    MAX_LISTED,
    _parse_numbers,
    check_features_carry_signal,
    check_structure,
    parse_columns,
    validate,
    where,
)
from src.stage import StageError


@pytest.fixture()
def columns(params):
    return parse_columns(params["prepare"]["columns"])


def frame(**cols):
    """A raw table as read from a CSV: strings, indexed by line (the header is line 1)."""
    out = pd.DataFrame(cols, dtype=object)
    out.index = pd.RangeIndex(2, len(out) + 2)
    return out


def good_rows(n=4):
    return frame(
        species=["Adelie", "Gentoo"] * (n // 2),
        island=["Dream", "Biscoe"] * (n // 2),
        bill_length_mm=["39.1", "47.5"] * (n // 2),
        bill_depth_mm=["18.7", "15.0"] * (n // 2),
        flipper_length_mm=["181", "215"] * (n // 2),
        body_mass_g=["3750", "5200"] * (n // 2),
        sex=["male", None] * (n // 2),
    )


def validate_default(raw, params, unit="line", **over):
    p = {**params["prepare"], **over}
    return validate(
        raw,
        parse_columns(p["columns"]),
        p["target"],
        p["features"],
        p["max_missing_features"],
        p["invalid_rows"],
        p["task"],
        unit,
    )


def test_parse_columns_rejects_bad_declarations():
    with pytest.raises(StageError, match="'x' is a category with no categories"):
        parse_columns({"x": {"type": "category"}})
    with pytest.raises(StageError, match="'y' needs numeric min < max"):
        parse_columns({"y": {"type": "number", "min": 5, "max": 1}})
    with pytest.raises(StageError, match="'z' has type 'text'"):
        parse_columns({"z": {"type": "text"}})
    with pytest.raises(StageError, match="'w' has unknown key\\(s\\) \\['maximum'\\]"):
        parse_columns({"w": {"type": "number", "min": 0, "maximum": 1}})


def test_yaml_booleans_in_a_category_list_are_named():
    with pytest.raises(StageError, match="'smoker' lists True, which YAML read as bool; quote it"):
        parse_columns({"smoker": {"type": "category", "categories": [True, False]}})


def test_integer_categories_stay_integers_mixed_ones_become_strings():
    cols = parse_columns(
        {
            "y": {"type": "category", "categories": [0, 1, 2]},
            "m": {"type": "category", "categories": [1, "b"]},
        }
    )
    assert cols["y"].categories == (0, 1, 2) and cols["y"].integer_coded
    assert cols["m"].categories == ("1", "b") and not cols["m"].integer_coded


def test_missing_column_is_named(columns):
    raw = good_rows().drop(columns=["bill_depth_mm", "sex"])
    with pytest.raises(StageError, match="missing column\\(s\\): bill_depth_mm, sex"):
        check_structure(raw, columns, "line")


def test_empty_table_is_rejected(columns):
    with pytest.raises(StageError, match="no rows"):
        check_structure(good_rows().iloc[0:0], columns, "line")


def test_wrong_dtype_names_column_value_and_line(columns):
    raw = good_rows()
    raw.loc[4, "body_mass_g"] = "heavy"
    with pytest.raises(
        StageError, match=r"'body_mass_g' must be numeric; found 'heavy' on line\(s\) 4"
    ):
        check_structure(raw, columns, "line")


def test_numbers_are_parsed_and_missing_kept(columns):
    raw = good_rows()
    raw.loc[2, "bill_length_mm"] = None
    typed = check_structure(raw, columns, "line")
    assert typed["flipper_length_mm"].dtype == np.float64
    assert np.isnan(typed.loc[2, "bill_length_mm"])
    assert typed.loc[3, "sex"] is None


def test_parquet_numbers_and_integer_codes_are_taken_as_they_are(columns):
    cols = parse_columns(
        {
            "n": {"type": "number", "min": 0, "max": 9},
            "c": {"type": "category", "categories": [1, 2]},
        }
    )
    raw = pd.DataFrame({"n": [1.5, np.nan], "c": [1.0, np.nan]}, index=pd.RangeIndex(1, 3))
    typed = check_structure(raw, cols, "row")
    assert typed["n"].tolist()[0] == 1.5 and typed["c"].tolist() == ["1", None]


def test_unknown_target_category_always_fails(params):
    raw = good_rows()
    raw.loc[5, "species"] = "Emperor"
    with pytest.raises(
        StageError, match=r"target 'species' has value\(s\) \['Emperor'\].*line\(s\) 5"
    ):
        validate_default(raw, params, invalid_rows="drop")


def test_rows_without_a_target_are_dropped_and_named(params, caplog):
    raw = good_rows(6)
    raw.loc[3, "species"] = None
    out = validate_default(raw, params)
    assert 3 not in out.index and len(out) == 5
    assert "dropping 1 row(s) with no target: line(s) 3" in caplog.text


def test_integer_coded_target_is_typed_and_checked_by_value(params):
    raw = good_rows()
    raw["species"] = ["0", "1.0", "1", "0"]
    declared = {
        **params["prepare"]["columns"],
        "species": {"type": "category", "categories": [0, 1]},
    }
    out = validate_default(raw, params, columns=declared)
    assert out["species"].tolist() == [0, 1, 1, 0] and out["species"].dtype == np.int64
    raw.loc[4, "species"] = "2"
    with pytest.raises(StageError, match=r"value\(s\) \['2'\] outside \[0, 1\] on line\(s\) 4"):
        validate_default(raw, params, columns=declared)


def test_target_must_fit_the_task(params):
    with pytest.raises(StageError, match="regression needs target 'species' declared a number"):
        validate_default(good_rows(), params, task="regression")
    with pytest.raises(StageError, match="task is 'ranking'"):
        validate_default(good_rows(), params, task="ranking")


def test_rows_missing_too_many_features_are_dropped(params):
    raw = good_rows()
    for col in ["bill_depth_mm", "flipper_length_mm", "body_mass_g"]:
        raw.loc[2, col] = None
    out = validate_default(raw, params, max_missing_features=2)
    assert list(out.index) == [3, 4, 5]
    kept = validate_default(raw, params, max_missing_features=3)
    assert len(kept) == 4


def test_out_of_range_row_dropped_or_fails_by_rule(params):
    raw = good_rows()
    raw.loc[3, "body_mass_g"] = "99999"
    raw.loc[4, "island"] = "Atlantis"
    out = validate_default(raw, params, invalid_rows="drop")
    assert list(out.index) == [2, 5]
    with pytest.raises(StageError, match="'island' is out of its declared domain on line\\(s\\) 4"):
        validate_default(raw, params, invalid_rows="fail")


def test_non_nullable_feature_missing_is_invalid(params):
    raw = good_rows(6)
    raw.loc[2, "island"] = None
    out = validate_default(raw, params)
    assert 2 not in out.index and len(out) == 5


def test_constant_or_empty_feature_is_refused_by_name(params):
    raw = good_rows()
    raw["island"] = "Dream"
    with pytest.raises(StageError, match="column 'island' is constant \\('Dream'\\)"):
        validate_default(raw, params)
    raw = good_rows()
    raw["bill_depth_mm"] = None
    with pytest.raises(StageError, match="column 'bill_depth_mm' has no values left"):
        validate_default(raw, params, max_missing_features=5)


def test_a_single_class_left_is_refused(params):
    raw = good_rows()
    raw["species"] = "Adelie"
    with pytest.raises(StageError) as err:
        validate_default(raw, params)
    assert str(err.value) == (
        "target 'species' has a single value ('Adelie') in the valid rows: nothing to learn"
    )


def test_output_has_features_then_target(params):
    out = validate_default(good_rows(), params)
    assert list(out.columns) == [*params["prepare"]["features"], "species"]


def test_bad_params_named(params):
    with pytest.raises(StageError, match="invalid_rows is 'ignore'"):
        validate_default(good_rows(), params, invalid_rows="ignore")
    with pytest.raises(StageError, match="not declared in columns: wingspan"):
        validate_default(good_rows(), params, features=["island", "wingspan"])
    with pytest.raises(StageError, match="must not include the target"):
        validate_default(good_rows(), params, features=["island", "species"])


@pytest.mark.parametrize(
    ("count", "told"),
    [
        (1, "line(s) 2"),
        (3, "line(s) 2, 3, 4"),
        (MAX_LISTED, "line(s) " + ", ".join(str(i) for i in range(2, MAX_LISTED + 2))),
        (
            MAX_LISTED + 3,
            "line(s) " + ", ".join(str(i) for i in range(2, MAX_LISTED + 2)) + " and 3 more",
        ),
    ],
)
def test_where_lists_the_first_lines_and_counts_the_rest(count, told):
    assert where(pd.Index(range(2, count + 2)), "line") == told
    assert where(pd.Index([5]), unit="row") == "row(s) 5"


def test_text_from_the_csv_reader_reads_as_pandas_reads_it():
    """Arrow's cast (the fast way) and pandas' agree, to the sign of zero: in a column of
    integers pandas reads "-0" as 0, Arrow as -0.0."""
    cases = (["1.5", "-0", None, "1e3", "-2", ""], ["-0", "1"], ["1", "2.25"], ["x", "3"])
    for texts in cases:
        column = pd.Series(texts, dtype="string[pyarrow]", name="mass")
        fast = _parse_numbers(column)
        slow = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").astype("float64")
        assert fast.name == "mass" and fast.dtype == np.float64
        assert fast.index.equals(column.index)
        np.testing.assert_array_equal(fast.to_numpy(), slow.to_numpy())
        np.testing.assert_array_equal(np.signbit(fast.to_numpy()), np.signbit(slow.to_numpy()))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"task": "clustering"}, "params: task is 'clustering'; use classification or regression"),
        ({"target": ["species"]}, "params: target must be one column name, got ['species']"),
        ({"target": "beak"}, "params: target 'beak' is not a declared column"),
        ({"features": []}, "params: features must list at least one column"),
        ({"features": "island"}, "params: features must list at least one column"),
        (
            {"features": ["island", 3, 4]},
            "params: features must list column names as strings, got 3",
        ),
        (
            {"features": ["island", "beak", "wing"]},
            "params: feature(s) not declared in columns: beak, wing",
        ),
        (
            {"features": ["island", "island"]},
            "params: features must be distinct and must not include the target",
        ),
        (
            {"features": ["island", "species"]},
            "params: features must be distinct and must not include the target",
        ),
        ({"max_missing_features": -1}, "params: max_missing_features must be a whole number >= 0"),
        ({"max_missing_features": 1.5}, "params: max_missing_features must be a whole number >= 0"),
        (
            {"max_missing_features": True},
            "params: max_missing_features must be a whole number >= 0",
        ),
    ],
)
def test_bad_params_are_named_exactly(params, over, message):
    with pytest.raises(StageError) as err:
        validate_default(good_rows(), params, **over)
    assert str(err.value) == message


def test_no_missing_feature_value_allowed_keeps_only_complete_rows(params):
    raw = good_rows()  # sex is missing on lines 3 and 5
    raw.loc[5, "sex"] = "female"
    assert list(validate_default(raw, params, max_missing_features=0).index) == [2, 4, 5]


def test_a_classification_target_must_be_declared_a_category(params):
    columns = {**params["prepare"]["columns"], "species": {"type": "number", "min": 0, "max": 9}}
    raw = good_rows()
    raw["species"] = ["1", "2", "1", "2"]
    with pytest.raises(StageError) as err:
        validate_default(raw, params, columns=columns)
    assert str(err.value) == (
        "params: task classification needs target 'species' declared a category"
    )


@pytest.mark.parametrize("unit", ["line", "row"])
def test_rows_without_a_target_are_dropped_and_logged_by_place(params, caplog, unit):
    raw = good_rows(6)
    raw.loc[4, "species"] = None
    with caplog.at_level(logging.WARNING, logger="lockserve.pipeline"):
        out = validate_default(raw, params, unit=unit)
    assert 4 not in out.index and len(out) == 5
    assert f"dropping 1 row(s) with no target: {unit}(s) 4" in caplog.messages


def test_an_integer_label_that_is_not_a_number_is_named(params):
    p = params["prepare"]
    columns = {**p["columns"], "species": {"type": "category", "categories": [0, 1]}}
    raw = good_rows()
    raw["species"] = ["0", "1", "x", "1"]
    with pytest.raises(StageError) as err:
        validate_default(raw, params, unit="row", columns=columns)
    assert str(err.value) == "target 'species' has value(s) ['x'] outside [0, 1] on row(s) 4"


def test_a_regression_target_out_of_range_names_the_range(params):
    p = params["prepare"]
    columns = {**p["columns"], "body_mass_g": {"type": "number", "min": 2000.0, "max": 7000.0}}
    features = [f for f in p["features"] if f != "body_mass_g"]
    raw = good_rows()
    raw.loc[3, "body_mass_g"] = "9000"
    with pytest.raises(StageError) as err:
        validate_default(
            raw, params, columns=columns, target="body_mass_g", features=features, task="regression"
        )
    assert str(err.value) == (
        "target 'body_mass_g' has value(s) ['9000.0'] outside [2000.0, 7000.0] on line(s) 3"
    )


def test_a_constant_column_of_one_row_is_named():
    one = pd.DataFrame({"island": ["Dream"]})
    with pytest.raises(StageError) as err:
        check_features_carry_signal(one, ["island"])
    assert str(err.value) == "column 'island' is constant ('Dream'): drop it from features"


def test_a_column_that_is_not_numeric_names_three_samples_and_every_line(params):
    raw = good_rows(6)
    raw["body_mass_g"] = ["heavy", "light", "3750", "huge", "vast", "heavy"]
    with pytest.raises(StageError) as err:
        validate_default(raw, params)
    assert str(err.value) == (
        "column 'body_mass_g' must be numeric; found 'heavy', 'light', 'huge' on line(s) "
        "2, 3, 5, 6, 7"
    )


def test_a_table_without_rows_is_named(params):
    with pytest.raises(StageError) as err:
        validate_default(good_rows().iloc[:0], params)
    assert str(err.value) == "raw table has no rows"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "params: prepare.columns must map column names to declarations"),
        ({"x": "number"}, "params: column 'x' needs a mapping with a type"),
        (
            {"x": {"type": "category", "categories": "abc"}},
            "params: column 'x' is a category with no categories",
        ),
        (
            {"x": {"type": "category", "categories": ["a", True]}},
            "params: column 'x' lists True, which YAML read as bool; quote it (e.g. 'true')",
        ),
        (
            {"x": {"type": "category", "categories": [1.5]}},
            "params: column 'x' category 1.5 is not a string or integer",
        ),
        (
            {"x": {"type": "category", "categories": [2**63]}},
            "params: column 'x' lists an integer beyond 64 bits",
        ),
        (
            {"x": {"type": "category", "categories": [-(2**63) - 1]}},
            "params: column 'x' lists an integer beyond 64 bits",
        ),
        (
            {"x": {"type": "number", "min": 0, "max": 1, "nullable": "yes"}},
            "params: column 'x' nullable must be true or false",
        ),
        (
            {"x": {"type": "number", "min": "low", "max": 1}},
            "params: column 'x' needs numeric min < max, both finite",
        ),
    ],
)
def test_bad_column_declarations_are_named_exactly(spec, message):
    with pytest.raises(StageError) as err:
        parse_columns(spec)
    assert str(err.value) == message


def test_declarations_take_every_64_bit_label_and_default_to_nullable():
    columns = parse_columns(
        {
            "label": {"type": "category", "categories": [-(2**63), 0, 2**63 - 1]},
            "x": {"type": "number", "min": 0, "max": 1},
        }
    )
    assert columns["label"].categories == (-(2**63), 0, 2**63 - 1)
    assert columns["x"].nullable and columns["label"].nullable


def test_row_rules_log_what_they_drop_and_name_an_empty_result(params, caplog):
    raw = good_rows(6)
    for col in ["bill_depth_mm", "flipper_length_mm", "body_mass_g"]:
        raw.loc[2, col] = None
    raw.loc[4, "island"] = "Atlantis"
    with caplog.at_level(logging.INFO, logger="lockserve.pipeline"):
        validate_default(raw, params, unit="row", max_missing_features=2)
    assert "dropping 1 row(s) missing more than 2 feature values: row(s) 2" in caplog.messages
    assert "dropping: column 'island' is out of its declared domain on row(s) 4" in caplog.messages
    raw["island"] = "Atlantis"
    with pytest.raises(StageError) as err:
        validate_default(raw, params)
    assert str(err.value) == "no valid rows left after applying the row rules"
