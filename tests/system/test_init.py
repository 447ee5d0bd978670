"""System: bring your own table. In a fresh clone, `make init` on two synthetic tables (binary
with integer labels and categorical features only, from CSV; regression from parquet with
non-ASCII column names), then `make pipeline` and `make serve` with no hand edit: each answers
a real row with the md5 that the work tree's dvc.lock pins. Other shapes (numeric-only
multiclass among them) go through the same stages and the app in-process in
tests/integration/test_any_table.py."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from src.stage import md5_file
from tests.conftest import ROOT, dvc, run
from tests.servers import Server, free_port, http
from tools import synth

pytestmark = pytest.mark.system

VENV = Path(sys.executable).parent.parent
MAKE = [
    "make",
    "--no-print-directory",
    f"VENV={VENV}",
    "-o",
    f"{VENV}/.installed-dev",
    "-o",
    "api/page/static/vendor/.installed",
    "-o",
    ".dvc/plots-page.html",
]

TABLES = {
    "binary integer labels, categorical only": (
        "churn.csv",
        {"features": 6, "task": "binary", "labels": "integers", "categorical": 1.0},
        "classification",
        "churn-classifier",
    ),
    "regression from parquet": (
        "Prices 2026.parquet",
        {"features": 7, "task": "regression", "names": "unicode"},
        "regression",
        "prices-2026-regressor",
    ),
}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    repo = tmp_path_factory.mktemp("byo") / "lockserve"
    run(["git", "clone", "-q", str(ROOT), str(repo)], cwd=ROOT)
    for cmd in (
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
    ):
        run(cmd, cwd=repo)
    return repo


def instance(row: pd.Series, features: list[str]) -> dict:
    return {name: (None if pd.isna(row[name]) else row[name]) for name in features}


@pytest.mark.parametrize("case", list(TABLES))
def test_make_init_then_pipeline_then_serve(clone, tmp_path, case):
    filename, shape, task, name = TABLES[case]
    frame = synth.table(rows=400, seed=len(case), **shape)
    table = tmp_path / filename
    synth.write(frame, table)

    init = run([*MAKE, "init", f"DATA={table}", "TARGET=target"], cwd=clone, timeout=600)
    assert f"{task} of 'target'" in init.stderr and f"artifact {name}" in init.stderr
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["prepare"]["data"] == f"data/raw/{filename}"
    assert params["prepare"]["task"] == task and params["artifact"]["name"] == name
    assert params["prepare"]["features"] == [c for c in frame.columns if c != "target"]
    assert (clone / f"data/raw/{filename}.dvc").exists()
    assert md5_file(clone / f"data/raw/{filename}") == md5_file(table)

    run([*MAKE, "pipeline"], cwd=clone, timeout=600)
    assert "up to date" in dvc("status", "dvc.yaml", cwd=clone).stdout
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    pinned = {o["path"]: o["md5"] for o in lock["stages"]["train"]["outs"]}["models/model.zip"]
    metrics = json.loads((clone / "reports/metrics.json").read_text())
    if task == "classification":  # better than chance, and the task's own metrics
        classes = params["prepare"]["columns"]["target"]["categories"]
        assert metrics["balanced_accuracy"] > 1 / len(classes) + 0.1 and "r2" not in metrics
    else:
        assert metrics["r2"] > 0.3 and "accuracy" not in metrics

    features = params["prepare"]["features"]
    rows = [instance(frame.iloc[i], features) for i in range(3)]
    port = free_port()
    server = Server(
        [*MAKE, "serve"],
        clone,
        port,
        tmp_path / "serve.log",
        WEB_CONCURRENCY="1",
        LOCKSERVE_PIDFILE=str(tmp_path / "server.pid"),
    )
    try:
        server.wait_ready(timeout=120)
        status, body = http("POST", server.base + "/predict", {"instances": rows})
        described = http("GET", server.base + "/model")[1]
    finally:
        server.stop()
    assert status == 200, body
    assert body["model"] == {"variant": "default", "name": name, "md5": pinned, "rev": "workspace"}
    assert md5_file(clone / "models/model.zip") == pinned
    assert (
        described["task"] == task
        and described["input_schema"]["features"][0]["name"] == (features[0])
    )
    if task == "classification":
        assert all(p["label"] in classes for p in body["predictions"])
        assert all(
            set(p["probabilities"]) == {str(c) for c in classes} for p in body["predictions"]
        )
    else:
        assert all(isinstance(p["value"], float) for p in body["predictions"])
