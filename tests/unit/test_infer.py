"""Unit: what `make init` infers of a table (src/infer.py) and how it writes it (src/init.py)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from src.infer import MAX_CLASSES, infer, infer_task, number_declaration
from src.init import _scalar, artifact_name, params_text, prepare_section


def table(n=40, **extra):
    rng = np.random.default_rng(0)
    base = {
        "size": [f"{v:.1f}" for v in rng.uniform(1, 9, n)],
        "colour": rng.choice(["red", "blue"], n).astype(object),
        "label": rng.choice(["a", "b", "c"], n).astype(object),
    }
    return pd.DataFrame({**base, **extra})


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "classification"),
        (["0", "1", "1", "0"], "classification"),
        ([str(i % MAX_CLASSES) for i in range(100)], "classification"),
        ([str(i % (MAX_CLASSES + 1)) for i in range(100)], "regression"),
        (["0.5", "1.5", "0.5"], "regression"),
        ([1.0, 2.0, np.nan, 1.0], "classification"),
    ],
)
def test_task_follows_the_target(values, task):
    assert infer_task(pd.Series(values, dtype=object)) == task


def test_columns_are_declared_from_their_values():
    frame = table()
    frame.loc[3, "colour"] = None
    found = infer(frame, "label")
    assert found.task == "classification" and found.features == ["size", "colour"]
    assert found.columns["label"] == {
        "type": "category",
        "categories": ["a", "b", "c"],
        "nullable": False,
    }
    assert found.columns["colour"] == {
        "type": "category",
        "categories": ["blue", "red"],
        "nullable": True,
    }
    size = found.columns["size"]
    observed = frame["size"].astype(float)
    assert size["type"] == "number" and not size["nullable"]
    assert size["min"] < observed.min() and size["max"] > observed.max()


def test_integer_labels_stay_integers():
    found = infer(table(label=[str(i % 2) for i in range(40)]), "label")
    assert found.columns["label"]["categories"] == [0, 1]


def test_ranges_get_a_margin_and_never_turn_negative_columns_negative():
    assert number_declaration(pd.Series([0.0, 10.0]), False) == {
        "type": "number",
        "min": 0.0,
        "max": 11.0,
        "nullable": False,
    }
    negative = number_declaration(pd.Series([-5.0, 5.0]), True)
    assert negative["min"] == -6.0 and negative["max"] == 6.0


def test_what_cannot_help_a_model_is_left_out_and_named():
    n = 40
    frame = table(
        n,
        id=[f"C{i}" for i in range(n)],
        row=[str(i) for i in range(n)],
        country=["SE"] * n,
        empty=[None] * n,
        comment=[f"note {i % 30}" for i in range(n)],
    )
    found = infer(frame, "label")
    assert found.features == ["size", "colour"]
    assert found.excluded == {
        "id": "an identifier (every value differs)",
        "row": "an identifier (consecutive whole numbers)",
        "country": "constant ('SE')",
        "empty": "no values",
        "comment": "free text (30 distinct values in 40 rows)",
    }


def test_notes_name_rare_classes_and_missing_targets():
    labels = ["a"] * 20 + ["b"] * 19 + ["z"]
    frame = table(label=labels)
    frame.loc[0, "label"] = None
    found = infer(frame, "label")
    assert any("['z']" in note and "single row" in note for note in found.notes)
    assert any("1 row(s) have no 'label'" in note for note in found.notes)


@pytest.mark.parametrize(
    ("target", "task", "message"),
    [
        ("nope", None, "target 'nope' is not a column of the table"),
        ("colour", "regression", "target 'colour' is not numeric: regression needs numbers"),
        ("label", "ranking", "task 'ranking'"),
    ],
)
def test_refusals_name_the_problem(target, task, message):
    with pytest.raises(ValueError, match=message):
        infer(table(), target, task)


def test_a_single_valued_target_is_refused():
    with pytest.raises(ValueError, match="single value"):
        infer(table(label=["a"] * 40), "label")


@pytest.mark.parametrize("text", ["yes", "no", "on", "null", "1.0", "007", "", " x", "true"])
def test_strings_yaml_would_misread_are_quoted(text):
    import io

    from ruamel.yaml import YAML

    buf = io.StringIO()
    YAML().dump({"v": _scalar(text), "w": [_scalar(text)]}, buf)
    assert yaml.safe_load(buf.getvalue()) == {"v": text, "w": [text]}


def test_written_params_read_back_as_inferred(tmp_path):
    frame = table(label=["yes", "no"] * 20)
    found = infer(frame, "label")
    params = tmp_path / "params.yaml"
    params.write_text("# keep me\nprepare: {seed: 7}\ntrain: {estimator: ridge}\n")
    section = prepare_section(tmp_path / "t.csv", "label", found, {"seed": 7})
    text = params_text(params, section, "t-classifier", "d").decode()
    doc = yaml.safe_load(text)
    assert "# keep me" in text and doc["train"] == {"estimator": "ridge"}
    assert doc["prepare"]["columns"]["label"]["categories"] == ["no", "yes"]
    assert doc["prepare"]["seed"] == 7 and doc["artifact"]["name"] == "t-classifier"
    assert doc["prepare"]["max_missing_features"] == len(found.features) - 1


@pytest.mark.parametrize(
    ("path", "task", "name"),
    [
        ("data/raw/Prices 2026.parquet", "regression", "prices-2026-regressor"),
        ("data/raw/churn.csv", "classification", "churn-classifier"),
        ("data/raw/2026.csv", "classification", "t-2026-classifier"),
        ("data/raw/Größe.csv", "classification", "gr-e-classifier"),
    ],
)
def test_artifact_names_are_gto_names(path, task, name):
    from pathlib import Path

    from api.resolver import GTO_REV

    assert artifact_name(Path(path), task) == name
    assert GTO_REV.match(f"{name}@v1.0.0")
