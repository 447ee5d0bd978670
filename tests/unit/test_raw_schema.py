"""Unit: the declared raw schema and the row rules (pure functions on frames)."""

import numpy as np
import pandas as pd
import pytest

from src.raw_schema import check_structure, parse_columns, validate
from src.stage import StageError


@pytest.fixture()
def columns(params):
    return parse_columns(params["prepare"]["columns"])


def frame(**cols):
    return pd.DataFrame(cols, dtype=object)


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
    )


def test_parse_columns_rejects_bad_declarations():
    with pytest.raises(StageError, match="'x' is a category with no categories"):
        parse_columns({"x": {"type": "category"}})
    with pytest.raises(StageError, match="'y' needs numeric min < max"):
        parse_columns({"y": {"type": "number", "min": 5, "max": 1}})
    with pytest.raises(StageError, match="'z' has type 'text'"):
        parse_columns({"z": {"type": "text"}})


def test_missing_column_is_named(columns):
    raw = good_rows().drop(columns=["bill_depth_mm", "sex"])
    with pytest.raises(StageError, match="missing column\\(s\\): bill_depth_mm, sex"):
        check_structure(raw, columns)


def test_empty_table_is_rejected(columns):
    with pytest.raises(StageError, match="no rows"):
        check_structure(good_rows().iloc[0:0], columns)


def test_wrong_dtype_names_column_value_and_line(columns):
    raw = good_rows()
    raw.loc[2, "body_mass_g"] = "heavy"
    with pytest.raises(
        StageError, match=r"'body_mass_g' must be numeric; found 'heavy' on line\(s\) 4"
    ):
        check_structure(raw, columns)


def test_numbers_are_parsed_and_missing_kept(columns):
    raw = good_rows()
    raw.loc[0, "bill_length_mm"] = None
    typed = check_structure(raw, columns)
    assert typed["flipper_length_mm"].dtype == np.float64
    assert np.isnan(typed.loc[0, "bill_length_mm"])
    assert typed.loc[1, "sex"] is None


def test_unknown_target_category_always_fails(params):
    raw = good_rows()
    raw.loc[3, "species"] = "Emperor"
    with pytest.raises(
        StageError, match=r"target 'species' has value\(s\) \['Emperor'\].*line\(s\) 5"
    ):
        validate_default(raw, params, invalid_rows="drop")


def test_missing_target_fails(params):
    raw = good_rows()
    raw.loc[1, "species"] = None
    with pytest.raises(StageError, match="target 'species'.*line\\(s\\) 3"):
        validate_default(raw, params)


def test_rows_missing_too_many_features_are_dropped(params):
    raw = good_rows()
    for col in ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]:
        raw.loc[0, col] = None
    out = validate_default(raw, params, max_missing_features=2)
    assert list(out.index) == [1, 2, 3]
    kept = validate_default(raw, params, max_missing_features=3)
    assert len(kept) == 4


def test_out_of_range_row_dropped_or_fails_by_rule(params):
    raw = good_rows()
    raw.loc[1, "body_mass_g"] = "99999"
    raw.loc[2, "island"] = "Atlantis"
    out = validate_default(raw, params, invalid_rows="drop")
    assert list(out.index) == [0, 3]
    with pytest.raises(StageError, match="'island' is out of its declared domain on line\\(s\\) 4"):
        validate_default(raw, params, invalid_rows="fail")


def test_non_nullable_feature_missing_is_invalid(params):
    raw = good_rows()
    raw.loc[0, "island"] = None
    out = validate_default(raw, params)
    assert 0 not in out.index


def test_output_has_features_then_target(params):
    out = validate_default(good_rows(), params)
    assert list(out.columns) == [*params["prepare"]["features"], "species"]


def test_bad_params_named(params):
    with pytest.raises(StageError, match="invalid_rows is 'ignore'"):
        validate_default(good_rows(), params, invalid_rows="ignore")
    with pytest.raises(StageError, match="not declared in columns: wingspan"):
        validate_default(good_rows(), params, features=["island", "wingspan"])
