"""Unit: the declared raw schema and the row rules (pure functions on frames)."""

import numpy as np
import pandas as pd
import pytest

from src.raw_schema import (
    MAX_LISTED,
    _parse_numbers,
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


def validate_default(raw, params, **over):
    p = {**params["prepare"], **over}
    return validate(
        raw,
        parse_columns(p["columns"]),
        p["target"],
        p["features"],
        p["max_missing_features"],
        p["invalid_rows"],
        p["task"],
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
    with pytest.raises(StageError, match="target 'species' has a single value \\('Adelie'\\)"):
        validate_default(raw, params)


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
    assert where(pd.Index(range(2, count + 2))) == told
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
