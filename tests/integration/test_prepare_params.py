"""Integration: the prepare stage's own checks on its params and what it writes and logs, on a
60-row raw table in a temp dir."""

import logging

import pandas as pd
import pytest

from src import prepare
from src.stage import StageError


def refused(params, raw, out) -> str:
    with pytest.raises(StageError) as err:
        prepare.run(params, out, raw)
    assert not out.exists()  # nothing half-written
    return str(err.value)


def test_an_unknown_key_is_named(params, tiny_raw, tmp_path):
    typo = {**params["prepare"], "tagret": "species", "seeds": 1}
    assert refused(typo, tiny_raw, tmp_path / "out") == (
        "params: prepare has unknown key(s) ['seeds', 'tagret']"
    )


def test_missing_keys_are_named(params, tiny_raw, tmp_path):
    short = {k: v for k, v in params["prepare"].items() if k not in ("target", "seed")}
    assert refused(short, tiny_raw, tmp_path / "out") == "params: prepare lacks seed, target"


@pytest.mark.parametrize("seed", [2**32, -1, True, 1.5, "42"])
def test_a_seed_outside_numpys_range_is_refused(params, tiny_raw, tmp_path, seed):
    assert refused({**params["prepare"], "seed": seed}, tiny_raw, tmp_path / "out") == (
        "params: prepare.seed must be an integer from 0 to 2**32 - 1"
    )


@pytest.mark.parametrize("seed", [0, 100, 2**32 - 1])
def test_any_seed_numpy_takes_splits(params, tiny_raw, tmp_path, seed):
    prepare.run({**params["prepare"], "seed": seed}, tmp_path / "out", tiny_raw)
    assert (tmp_path / "out" / "train.parquet").exists()


def test_the_splits_hold_the_target_and_features_and_nothing_else(params, tiny_raw, tmp_path):
    p = params["prepare"]
    prepare.run(p, tmp_path / "out", tiny_raw)
    for name in ("train", "test"):
        frame = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        assert sorted(frame.columns) == sorted([p["target"], *p["features"]])
        assert list(frame.index) == list(range(len(frame)))


def test_the_split_is_logged_and_a_declared_class_without_rows_warned(
    params, tiny_raw, tmp_path, caplog
):
    p = params["prepare"]
    target = p["target"]
    columns = {
        **p["columns"],
        target: {
            **p["columns"][target],
            "categories": [*p["columns"][target]["categories"], "Emperor"],
        },
    }
    with caplog.at_level(logging.INFO, logger="lockserve.pipeline"):
        prepare.run({**p, "columns": columns}, tmp_path / "out", tiny_raw)
    messages = [r.getMessage() for r in caplog.records if r.name == "lockserve.pipeline"]
    train, test = (
        len(pd.read_parquet(tmp_path / "out" / f"{n}.parquet")) for n in ("train", "test")
    )
    assert f"split {train + test} rows: {train} train, {test} test" in messages
    assert "declared class(es) ['Emperor'] have no valid rows" in messages


@pytest.mark.parametrize(("suffix", "unit"), [(".csv", "line"), (".parquet", "row")])
def test_a_bad_value_is_placed_by_line_in_a_csv_and_by_row_in_parquet(
    params, tiny_raw, tmp_path, suffix, unit
):
    frame = pd.read_csv(tiny_raw)
    frame["body_mass_g"] = [None if pd.isna(v) else str(v) for v in frame["body_mass_g"]]
    frame.loc[1, "body_mass_g"] = "heavy"
    raw = tmp_path / f"table{suffix}"
    frame.to_csv(raw, index=False) if suffix == ".csv" else frame.to_parquet(raw, index=False)
    where = "line(s) 3" if unit == "line" else "row(s) 2"
    assert refused(params["prepare"], raw, tmp_path / "out") == (
        f"column 'body_mass_g' must be numeric; found 'heavy' on {where}"
    )


def test_a_class_of_two_rows_is_split_one_each_side(params, tiny_raw, tmp_path):
    frame = pd.read_csv(tiny_raw, dtype=str, keep_default_na=False)
    target = params["prepare"]["target"]
    rare = frame[frame[target] == "Chinstrap"].head(2)
    frame = pd.concat([frame[frame[target] != "Chinstrap"], rare])
    raw = tmp_path / "two.csv"
    frame.to_csv(raw, index=False)
    prepare.run(params["prepare"], tmp_path / "out", raw)
    for name in ("train", "test"):
        side = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")
        assert (side[target] == "Chinstrap").sum() == 1


def test_a_split_sklearn_cannot_make_is_one_line(params, tiny_raw, tmp_path):
    p = {**params["prepare"], "test_size": 0.01}  # fewer test rows than classes
    message = refused(p, tiny_raw, tmp_path / "out")
    assert message.startswith("cannot split ") and " rows with test_size=0.01: " in message
    assert "\n" not in message
