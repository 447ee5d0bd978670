"""Integration: batch scoring (batch/) answers every row as POST /predict does — the same
predictions for rows the API takes, the API's own message in ``error`` for rows it refuses —
through an in-process Dask cluster, from parquet and from CSV, with the rows in order and the
model named in the parquet metadata; bad inputs are refused in one line, nothing written."""

import hashlib
import logging

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.resolver import Resolved
from api.settings import Settings
from api.store import ModelStore
from batch import score
from batch.rows import Scorer, ScoringError
from tests.conftest import PENGUIN, in_process_dask, served_model

GOOD = [
    PENGUIN,
    {
        "island": "Dream",
        "bill_depth_mm": 18.4,
        "flipper_length_mm": 195.0,
        "body_mass_g": 3700.0,
        "sex": None,
    },
    {
        "island": "Torgersen",
        "bill_depth_mm": None,
        "flipper_length_mm": 190.0,
        "body_mass_g": None,
        "sex": "female",
    },
]
BAD = [
    {
        "island": "Mars",
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 217.0,
        "body_mass_g": 5200.0,
        "sex": "male",
    },
    {
        "island": "Biscoe",
        "bill_depth_mm": 99.0,
        "flipper_length_mm": 217.0,
        "body_mass_g": 5200.0,
        "sex": "male",
    },
    {
        "island": "Biscoe",
        "bill_depth_mm": None,
        "flipper_length_mm": None,
        "body_mass_g": None,
        "sex": None,
    },
    {
        "island": None,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 217.0,
        "body_mass_g": 5200.0,
        "sex": "male",
    },
]


def resolved(data: bytes, rev: str = "v1") -> Resolved:
    return served_model("default", data, rev).resolved


def api_answers(data: bytes, rows: list[dict]) -> list[dict]:
    """What POST /predict answers for each row alone: its prediction, or its refusal."""
    store = ModelStore({"default": served_model("default", data, "v1")})
    out = []
    with TestClient(create_app(Settings(), store)) as client:
        for row in rows:
            body = client.post("/predict", json={"instances": [row]}).json()
            if "predictions" in body:
                out.append(body["predictions"][0])
            else:
                (detail,) = body["error"]["details"]
                field = f"field {detail['field']!r}: " if "field" in detail else ""
                out.append({"error": field + detail["message"]})
    return out


def check(scored: pd.DataFrame, expected: list[dict]) -> None:
    for (_, row), want in zip(scored.iterrows(), expected, strict=True):
        if "error" in want:
            assert row["error"] == want["error"]
            assert pd.isna(row["label"]) and pd.isna(row["proba_Adelie"])
        else:
            assert pd.isna(row["error"])
            assert row["label"] == want["label"]
            assert {c: row[f"proba_{c}"] for c in want["probabilities"]} == want["probabilities"]


@pytest.fixture(scope="module")
def client():
    with in_process_dask() as client:
        yield client


def test_a_partition_is_answered_as_predict_answers_each_row(artifacts):
    data = artifacts["v1"]
    rows = GOOD + BAD + GOOD
    scored = Scorer(data, hashlib.md5(data).hexdigest())(pd.DataFrame(rows), keep=["island"])
    assert list(scored.columns) == [
        "island",
        "label",
        "proba_Adelie",
        "proba_Chinstrap",
        "proba_Gentoo",
        "error",
    ]
    check(scored, api_answers(data, rows))


def test_text_is_read_as_the_pipeline_reads_it_and_what_is_no_number_is_refused(artifacts):
    data = artifacts["v1"]
    frame = pd.DataFrame(
        {
            "island": ["Biscoe", "Biscoe"],
            "bill_depth_mm": ["15", "abc"],
            "flipper_length_mm": ["2.17e2", "217"],
            "body_mass_g": ["5200", "5200"],
            "sex": ["male", "male"],
        }
    )
    scored = Scorer(data, hashlib.md5(data).hexdigest())(frame, keep=[], text=True)
    assert scored["label"].tolist()[0] == api_answers(data, GOOD[:1])[0]["label"]
    assert scored["error"].tolist()[1] == "field 'bill_depth_mm': Input should be a valid number"


def test_a_model_with_other_bytes_or_no_graph_is_refused(artifacts):
    with pytest.raises(ScoringError, match="does not match the pinned"):
        Scorer(artifacts["v1"], "0" * 32)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_table_is_scored_on_dask_in_order_with_the_model_named(artifacts, client, tmp_path, kind):
    data = artifacts["v1"]
    rows = (GOOD + BAD) * 40  # 280 rows
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", range(len(frame)))
    if kind == "parquet":
        source = tmp_path / "in"
        source.mkdir()
        for i in range(4):  # four partitions
            frame.iloc[i * 70 : (i + 1) * 70].to_parquet(source / f"part.{i}.parquet", index=False)
    else:
        source = tmp_path / "in.csv"
        frame.to_csv(source, index=False)
    out = tmp_path / "out"
    n = score.score(str(source), str(out), resolved(data), ["id"], client, blocksize="1kB")
    assert n == len(rows)
    files = sorted(out.glob("*.parquet"))
    assert len(files) >= 2 and not list(tmp_path.glob("out.partial-*"))
    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"lockserve.md5"] == hashlib.md5(data).hexdigest().encode()
    assert meta[b"lockserve.rev"] == b"v1"
    scored = pd.read_parquet(out)
    assert scored["id"].astype(int).tolist() == list(range(len(rows)))
    check(scored, api_answers(data, GOOD + BAD) * 40)


def test_bad_inputs_are_refused_in_one_line_and_nothing_is_written(
    artifacts, client, tmp_path, monkeypatch, caplog
):
    data = artifacts["v1"]
    source = tmp_path / "in.parquet"
    pd.DataFrame(GOOD).drop(columns=["sex"]).to_parquet(source)
    with pytest.raises(ScoringError, match="has no column 'sex'"):
        score.score(str(source), str(tmp_path / "a"), resolved(data), None, client)
    pd.DataFrame(GOOD).assign(label=1).to_parquet(source)
    with pytest.raises(ScoringError, match=r"column\(s\) \['label'\] that the answer adds"):
        score.score(str(source), str(tmp_path / "b"), resolved(data), None, client)
    with pytest.raises(ScoringError, match="--keep names 'nope'"):
        score.score(str(source), str(tmp_path / "c"), resolved(data), ["nope"], client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
    # the command: an output that exists, or a rev that does not, is one line and exit 1
    (tmp_path / "taken").mkdir()
    with caplog.at_level(logging.ERROR, logger="lockserve.batch"):
        assert score.main([str(source), str(tmp_path / "taken")]) == 1
    assert caplog.messages == [
        f"batch scoring failed: {tmp_path / 'taken'} exists: choose a new output"
    ]


def test_a_quoted_cell_across_csv_blocks_is_named_and_whole_files_read_it(
    artifacts, client, tmp_path
):
    data = artifacts["v1"]
    frame = pd.DataFrame(GOOD * 60)
    frame.insert(0, "note", ["two\nlines"] * len(frame))
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    job = score.Job(str(source), resolved(data), ["note"], blocksize="1kB")
    with pytest.raises(ScoringError, match="score it with --blocksize 0"):
        job.run(client, str(tmp_path / "split"))
    assert not (tmp_path / "split").exists() and not list(tmp_path.glob("split.partial-*"))
    whole = score.Job(str(source), resolved(data), ["note"], blocksize=0)
    assert whole.run(client, str(tmp_path / "out")) == (len(frame), 0)
    assert pd.read_parquet(tmp_path / "out")["note"].tolist() == ["two\nlines"] * len(frame)


def test_the_work_trees_model_names_no_commit(artifacts, tmp_path):
    source = tmp_path / "in.parquet"
    pd.DataFrame(GOOD).to_parquet(source)
    meta = score.Job(str(source), resolved(artifacts["v1"], "workspace"), None).metadata()
    assert "lockserve.commit" not in meta and meta["lockserve.rev"] == "workspace"
    assert "lockserve.commit" in score.Job(str(source), resolved(artifacts["v1"]), None).metadata()
