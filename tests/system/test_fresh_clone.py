"""System: a fresh clone of the repo reproduces the pipeline with DVC itself.

The clone is of the committed HEAD, with its own (empty) default remote, as on a new machine.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from src.stage import md5_file
from tests.conftest import PENGUIN, ROOT, dvc, run
from tests.servers import Server, free_port, http

pytestmark = pytest.mark.system

WATCHED = [
    "data/prepared/train.parquet",
    "data/prepared/test.parquet",
    "data/prepared/schema.json",
    "data/features/transformer.pkl",
    "models/model.zip",
    "reports/metrics.json",
]


def stages_run(proc) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", proc.stdout + proc.stderr)


def snapshot(repo: Path) -> dict[str, str]:
    return {p: md5_file(repo / p) for p in WATCHED}


def restore(repo: Path) -> None:
    """Back to the committed state: params, raw data and every out."""
    run(["git", "reset", "-q", "--hard", "HEAD"], cwd=repo)  # repro autostages dvc.lock
    run([sys.executable, "-m", "src.bootstrap"], cwd=repo)
    dvc("checkout", "-f", "-q", cwd=repo)
    assert "up to date" in dvc("status", cwd=repo).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    repo = tmp_path_factory.mktemp("fresh") / "lockserve"
    run(["git", "clone", "-q", str(ROOT), str(repo)], cwd=ROOT)
    # Reports are committed with git; delete them so evaluate must regenerate them too.
    for path in (repo / "reports").rglob("*.*"):
        path.unlink()
    first = run(["make", "pipeline"], cwd=repo, timeout=600)  # the set-up half of `make run`
    assert "bootstrapped from palmerpenguins, md5 verified" in first.stdout
    return repo, first


def test_repro_on_fresh_clone_changes_nothing(clone):
    repo, first = clone
    assert stages_run(first) == ["prepare", "featurize", "train", "evaluate"]
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""
    assert "up to date" in dvc("status", cwd=repo).stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    pinned = {o["path"]: o["md5"] for o in lock["stages"]["train"]["outs"]}
    assert pinned["models/model.zip"] == md5_file(repo / "models/model.zip")


def test_make_run_serves_the_model_dvc_lock_pins(clone, tmp_path):
    repo, _ = clone
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    pinned = lock["stages"]["train"]["outs"][0]["md5"]
    port = free_port()
    server = Server(["make", "run"], repo, port, tmp_path / "log", WEB_CONCURRENCY="1")
    try:
        server.wait_ready(timeout=120)
        status, body = http("POST", server.base + "/predict", {"instances": [PENGUIN]})
    finally:
        server.stop()
    assert status == 200
    assert body["predictions"][0]["label"] == "Gentoo"
    assert body["model"]["md5"] == pinned


def test_metrics_are_sane_and_reviewable(clone):
    repo, _ = clone
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["f1_macro"] > 0.9
    assert metrics["roc_auc_ovr"] > 0.95 and 0 < metrics["log_loss"] < 0.5
    shown = dvc("metrics", "show", cwd=repo).stdout
    assert "reports/metrics.json" in shown and "accuracy" in shown
    diff = dvc("metrics", "diff", "--all", "HEAD", cwd=repo).stdout
    assert "accuracy" in diff


def test_plots_show_writes_html(clone, tmp_path):
    repo, _ = clone
    dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    page = (tmp_path / "plots" / "index.html").read_text()
    for title in ["Confusion matrix", "ROC one-vs-rest", "Permutation importance"]:
        assert title in page


def test_train_param_change_reruns_train_and_evaluate_only(clone):
    repo, _ = clone
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        before = md5_file(repo / "models/model.zip")
        params["train"]["random_forest"]["n_estimators"] = 50
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert stages_run(dvc("repro", cwd=repo)) == ["train", "evaluate"]
        assert md5_file(repo / "models/model.zip") != before
        diff = dvc("params", "diff", cwd=repo).stdout
        assert "train.random_forest.n_estimators" in diff
    finally:
        restore(repo)


def test_raw_data_change_reruns_all_four(clone):
    repo, _ = clone
    try:
        raw = repo / "data/raw/penguins.csv"
        raw.write_text(raw.read_text().replace("39.1,18.7,181,3750", "39.2,18.7,181,3750", 1))
        assert stages_run(dvc("repro", cwd=repo)) == ["prepare", "featurize", "train", "evaluate"]
    finally:
        restore(repo)


BAD = {
    "missing column": (
        lambda text: (
            "\n".join(
                ",".join(line.split(",")[:4] + line.split(",")[5:]) for line in text.splitlines()
            )
            + "\n"
        ),
        "raw table is missing column(s): flipper_length_mm",
    ),
    "wrong dtype": (
        lambda text: text.replace("39.1,18.7,181,3750", "39.1,18.7,long,3750", 1),
        "column 'flipper_length_mm' must be numeric; found 'long' on line(s) 2",
    ),
    "empty file": (lambda text: "", "data/raw/penguins.csv: file is empty"),
    "unknown target": (
        lambda text: text.replace("Adelie,Torgersen,39.1", "Emperor,Torgersen,39.1", 1),
        "target 'species' has value(s) ['Emperor'] outside",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_raw_data_fails_and_leaves_outputs_untouched(clone, case):
    repo, _ = clone
    change, message = BAD[case]
    before = snapshot(repo)
    try:
        raw = repo / "data/raw/penguins.csv"
        raw.write_text(change(raw.read_text()))
        proc = dvc("repro", cwd=repo, check=False)
        assert proc.returncode != 0
        assert message in proc.stdout + proc.stderr
        assert "failed to reproduce 'prepare'" in proc.stdout + proc.stderr
        assert snapshot(repo) == before
    finally:
        restore(repo)
