"""Integration: static serving through the app. A table that batch scoring wrote, tracked by
DVC and pinned at a rev, answers GET /predictions/{key} and POST /predictions with exactly what
POST /predict answers for the same row, naming the model that scored it and the table's md5;
its bytes are verified (work tree, cache, remote) and a table that does not fit is refused at
start in one line."""

import hashlib
import logging
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.resolver import ResolutionError
from api.settings import Settings
from tests import lookup_repo
from tests.conftest import dvc, run
from tests.lookup_repo import IDS, KEY, REFUSED, ROWS, TABLE


@pytest.fixture()
def repo(scored_base, tmp_path) -> Path:
    return lookup_repo.copy(scored_base, tmp_path / "copy")


def app_for(repo: Path, tmp_path: Path, lookup: dict | None, rev: str = "t2", **settings):
    serving = {"strategy": "single", "variants": {"default": {"rev": rev}}}
    if lookup is not None:
        serving["lookup"] = lookup
    path = tmp_path / "serving.yaml"
    path.write_text(yaml.safe_dump(serving))
    return create_app(
        Settings(repo=repo, serving_file=path, state_db=tmp_path / "s.sqlite", **settings)
    )


def pinned_md5(repo: Path) -> str:
    return yaml.safe_load((repo / f"{TABLE}.dvc").read_text())["outs"][0]["md5"]


@pytest.mark.parametrize("fast_path", [True, False])
def test_answers_are_those_predict_gives_and_name_both_md5s(repo, tmp_path, artifacts, fast_path):
    app = app_for(repo, tmp_path, {"path": TABLE, "key": KEY}, fast_path=fast_path)
    with TestClient(app) as client:
        live = client.post("/predict", json={"instances": ROWS[:3]}).json()
        model_md5 = live["model"]["md5"]
        assert model_md5 == hashlib.md5(artifacts["v2"]).hexdigest()
        table = {"path": TABLE, "md5": pinned_md5(repo), "rev": "t2"}
        for i in range(3):
            body = client.get(f"/predictions/{IDS[i]}").json()
            assert body["key"] == IDS[i]
            assert (body["label"], body["probabilities"]) == (
                live["predictions"][i]["label"],
                live["predictions"][i]["probabilities"],
            )
            assert body["model"]["md5"] == model_md5 and body["model"]["rev"] == "v2"
            assert {k: body["table"][k] for k in table} == table
        many = client.post("/predictions", json={"keys": [IDS[2], "nobody", IDS[0]]}).json()
        assert [p.get("label") for p in many["predictions"]] == [
            live["predictions"][2]["label"],
            None,
            live["predictions"][0]["label"],
        ]
        assert many["predictions"][1] == {
            "key": "nobody",
            "error": f"no row with id = 'nobody' in {TABLE} (md5 {table['md5']})",
        }
        described = client.get("/predictions").json()
    assert described["rows"] == len(ROWS) and described["refused_rows"] == len(REFUSED)
    assert described["key"] == KEY and described["model"]["md5"] == model_md5


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_row_refused_when_scored_answers_with_the_refusal_predict_gives(
    repo, tmp_path, fast_path
):
    app = app_for(repo, tmp_path, {"path": TABLE, "key": KEY}, fast_path=fast_path)
    with TestClient(app) as client:
        live = client.post("/predict", json={"instances": [ROWS[REFUSED[0]]]})
        stored = client.get(f"/predictions/{IDS[REFUSED[0]]}")
        unknown = client.get("/predictions/nobody")
    assert live.status_code == stored.status_code == 422
    (detail,) = live.json()["error"]["details"]
    assert stored.json()["error"]["message"].endswith(
        f"refused when the table was scored: field 'island': {detail['message']}"
    )
    assert unknown.status_code == 404 and "no row with id = 'nobody'" in unknown.text


def test_the_table_is_the_one_the_rev_pins(repo, tmp_path, artifacts, caplog):
    """lookup.rev t1 holds v1's answers while the model served is v2's: each answer says so,
    and the start warns that the two may disagree (not when one model did both)."""

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "lockserve.app"]

    with caplog.at_level(logging.WARNING):
        app_for(repo, tmp_path, {"path": TABLE, "key": KEY})
        assert warned() == []
        app = app_for(repo, tmp_path, {"path": TABLE, "key": KEY, "rev": "t1"})
    v1, v2 = (hashlib.md5(artifacts[v]).hexdigest() for v in ("v1", "v2"))
    assert "workspace copy" not in caplog.text  # t1's table is not the work tree's: ordinary
    assert warned() == [
        f"lookup table {TABLE} (t1) was scored by model {v1}; /predict answers with {v2} (t2): "
        "the two may disagree"
    ]
    with TestClient(app) as client:
        body = client.get(f"/predictions/{IDS[0]}").json()
        served = client.post("/predict", json={"instances": ROWS[:1]}).json()["model"]["md5"]
    assert body["model"]["md5"] == hashlib.md5(artifacts["v1"]).hexdigest()
    assert served == hashlib.md5(artifacts["v2"]).hexdigest()
    t1 = yaml.safe_load(run(["git", "show", f"t1:{TABLE}.dvc"], cwd=repo).stdout)["outs"][0]["md5"]
    assert body["table"]["md5"] == t1 != pinned_md5(repo) and body["table"]["rev"] == "t1"


def cache_dir(repo: Path) -> Path:
    return repo / ".dvc" / "cache"


def test_changed_bytes_are_never_served_and_missing_ones_come_from_the_remote(repo, tmp_path):
    part = next((repo / TABLE).glob("*.parquet"))
    want = TestClient(app_for(repo, tmp_path, {"path": TABLE, "key": KEY})).get(
        f"/predictions/{IDS[0]}"
    )
    # the work tree's copy edited: the cache's verified copy answers
    frame = pd.read_parquet(part)
    frame.loc[0, "label"] = "Chinstrap"
    part.chmod(0o644)
    part.unlink()
    frame.to_parquet(part)
    client = TestClient(app_for(repo, tmp_path, {"path": TABLE, "key": KEY}))
    assert client.get(f"/predictions/{IDS[0]}").json() == want.json()
    # nothing local at all: fetched from the remote, verified
    shutil.rmtree(repo / TABLE)
    shutil.rmtree(cache_dir(repo))
    client = TestClient(app_for(repo, tmp_path, {"path": TABLE, "key": KEY}))
    assert client.get(f"/predictions/{IDS[0]}").json() == want.json()
    assert client.get("/predictions").json()["table"]["md5"] == pinned_md5(repo)
    # the remote's copy of the file changed as well: refused, naming the file and both md5s
    shutil.rmtree(cache_dir(repo))
    listing = (repo.parent / "remote").rglob("*")
    remote_files = [p for p in listing if p.is_file() and not p.name.endswith(".dir")]
    for path in remote_files:
        path.chmod(0o644)
        path.write_bytes(path.read_bytes() + b"!")
    with pytest.raises(
        ResolutionError,
        match=r"^lookup: predictions/scored/part\.0\.parquet: expected md5 \w+ "
        r"\(dvc.lock at t2\), remote .local. .* gave md5 ",
    ):
        app_for(repo, tmp_path, {"path": TABLE, "key": KEY})


def write_table(repo: Path, frame: pd.DataFrame, metadata: dict[bytes, bytes] | None) -> None:
    """Replace TABLE with ``frame`` (one part) and `dvc add` it."""
    shutil.rmtree(repo / TABLE)
    (repo / TABLE).mkdir()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, repo / TABLE / "part.0.parquet")
    dvc("add", "-q", TABLE, cwd=repo)


def test_what_is_not_a_pinned_scoring_is_refused(repo, tmp_path):
    part = next((repo / TABLE).glob("*.parquet"))
    write_table(repo, pd.read_parquet(part), None)  # no lockserve.* metadata
    with pytest.raises(ResolutionError, match="not one scoring's output"):
        app_for(repo, tmp_path, {"path": TABLE, "key": KEY}, rev="workspace")
    shutil.copy(part, repo / "plain.parquet")
    with pytest.raises(
        ResolutionError, match="plain.parquet at workspace .* is not tracked by DVC"
    ):
        app_for(repo, tmp_path, {"path": "plain.parquet", "key": KEY}, rev="workspace")
    with pytest.raises(ResolutionError, match="^lookup: nowhere does not exist at t2"):
        app_for(repo, tmp_path, {"path": "nowhere", "key": KEY})


def test_without_a_lookup_the_paths_say_static_serving_is_off(repo, tmp_path):
    with TestClient(app_for(repo, tmp_path, None)) as client:
        got = [client.get("/predictions"), client.get("/predictions/x")]
        got.append(client.post("/predictions", json={"keys": ["x"]}))
    for response in got:
        assert response.status_code == 404
        assert "static serving is off" in response.json()["error"]["message"]


def test_bad_lookup_requests_are_4xx_naming_the_problem(repo, tmp_path):
    app = app_for(repo, tmp_path, {"path": TABLE, "key": KEY}, max_batch=2)
    with TestClient(app) as client:
        too_many = client.post("/predictions", json={"keys": IDS[:3]})
        empty = client.post("/predictions", json={"keys": []})
        broken = client.post(
            "/predictions", content=b"{", headers={"content-type": "application/json"}
        )
        untyped = client.post("/predictions", content=b'{"keys": ["x"]}')
        wrong = client.post("/predictions", json={"key": "x"})
        huge = client.post("/predictions", json={"keys": ["x", 10**23]})
        flag = client.post("/predictions", json={"keys": [True]})
    assert too_many.status_code == 413 and "3 keys in one request; at most 2" in too_many.text
    assert empty.status_code == 422 and "keys" in empty.json()["error"]["message"]
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert wrong.status_code == 422
    assert untyped.status_code == 415 and "application/json" in untyped.text
    assert huge.status_code == 422 and huge.json()["error"]["message"] == (
        f"field 'keys': keys[1] is {10**23}: give a string or a 64-bit integer"
    )
    assert flag.status_code == 422 and "keys[0] is true" in flag.text
