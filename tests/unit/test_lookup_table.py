"""Unit: reading a table of precomputed answers (api/lookup.py) from verified parquet bytes —
its index by key, the answers it gives, and the one-line refusals of a table that does not fit."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api import lookup
from api.resolver import ResolutionError, ResolvedData

MODEL = {b"lockserve.md5": b"a" * 32, b"lockserve.rev": b"v1", b"lockserve.artifact": b"m"}


def parquet(columns: dict, metadata: dict | None = MODEL) -> bytes:
    table = pa.table(columns)
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def classified(ids: list, labels: list, errors: list | None = None) -> dict:
    n = len(ids)
    return {
        "id": ids,
        "label": labels,
        "proba_a": [0.75] * n,
        "proba_b": [0.25] * n,
        "error": errors or [None] * n,
    }


def resolved(files: dict[str, bytes]) -> ResolvedData:
    return ResolvedData("predictions/t", "f" * 32 + ".dir", "v1", "c" * 40, "cache", files)


def test_answers_by_key_across_parts_in_part_order():
    files = {
        f"part.{i}.parquet": parquet(classified([f"k{i}"], ["a"] if i != 10 else ["b"]))
        for i in (2, 10, 1)
    }
    table = lookup.load(resolved(files), "id")
    assert table.keys == ["k1", "k2", "k10"]  # 10 after 2: numbers compare as numbers
    assert table.answer(table.find("k10")) == {
        "key": "k10",
        "label": "b",
        "probabilities": {"a": 0.75, "b": 0.25},
    }
    assert table.find("k3") is None
    assert table.model == {"md5": "a" * 32, "rev": "v1", "artifact": "m"}
    assert table.describe()["rows"] == 3 and table.describe()["classes"] == ["a", "b"]


def test_integer_keys_are_found_by_their_text_and_refusals_are_kept():
    data = classified([7, 8], ["a", None], [None, "field 'x': bad"])
    table = lookup.load(resolved({"": parquet(data)}), "id")
    assert table.answer(table.find("7"))["label"] == "a"
    assert table.answer(table.find("8")) == {"key": 8, "error": "field 'x': bad"}
    assert table.describe()["refused_rows"] == 1


def test_a_regression_table_answers_values():
    data = {"id": ["r"], "value": [2.5], "error": [None]}
    table = lookup.load(resolved({"": parquet(data)}), "id")
    assert table.answer(0) == {"key": "r", "value": 2.5} and table.task == "regression"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"": parquet(classified(["x", "x"], ["a", "a"]))},
            "key 'x' appears twice in column 'id' (rows 0 and 1)",
        ),
        ({"": parquet(classified([None, "y"], ["a", "a"]))}, "key column 'id' is empty in row 0"),
        (
            {"": parquet(classified([0.5], ["a"]))},
            "key column 'id' holds double, not integers or strings",
        ),
        (
            {"": parquet({"ID": ["x"], "label": ["a"], "proba_a": [1.0], "error": [None]})},
            "has no key column 'id' (columns: ID, label, proba_a, error)",
        ),
        ({"": parquet({"id": ["x"], "label": ["a"], "proba_a": [1.0]})}, "has no 'error' column"),
        (
            {"": parquet({"id": ["x"], "score": [1.0], "error": [None]})},
            "neither label and proba_* columns nor value",
        ),
        ({"": parquet(classified(["x"], ["a"]), None)}, "its files name 1 model(s)"),
        (
            {
                "part.0.parquet": parquet(classified(["x"], ["a"])),
                "part.1.parquet": parquet(
                    classified(["y"], ["a"]), {**MODEL, b"lockserve.md5": b"b" * 32}
                ),
            },
            "is not one scoring's output: its files name 2 model(s)",
        ),
        ({"": b"not parquet"}, "predictions/t (md5 " + "f" * 32 + ".dir)/ is not parquet"),
        ({"notes.txt": b"hello"}, "holds no .parquet file"),
    ],
)
def test_a_table_that_does_not_fit_is_refused_in_one_line(files, message):
    with pytest.raises(ResolutionError) as err:
        lookup.load(resolved(files), "id")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("predictions/t (md5 ")
