"""System: a fresh clone of the repo reproduces the pipeline with DVC itself.

The clone is of the committed HEAD, with its own (empty) default remote, as on a new machine.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.stage import md5_file
from tests.conftest import PENGUIN, ROOT, dvc, run, venv_env
from tests.containers import need_containers
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
    run([sys.executable, "-m", "tools.data"], cwd=repo)
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
    assert "bootstrapped from palmerpenguins, md5 verified" in first.stdout + first.stderr
    return repo, first


def test_repro_on_fresh_clone_changes_nothing(clone):
    repo, first = clone
    assert stages_run(first) == ["prepare", "featurize", "train", "evaluate"]
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""
    assert "up to date" in dvc("status", cwd=repo).stdout
    committed = run(["git", "show", "HEAD:dvc.lock"], cwd=repo).stdout
    assert (repo / "dvc.lock").read_text() == committed  # `dvc repro` rewrote it identically
    lock = yaml.safe_load(committed)
    for stage in lock["stages"].values():  # every reproduced output has the committed bytes
        for out in stage.get("outs", []):
            assert md5_file(repo / out["path"]) == out["md5"], out["path"]


def test_make_run_serves_the_model_dvc_lock_pins(clone, tmp_path):
    repo, _ = clone
    lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], cwd=repo).stdout)
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
    assert body["model"]["md5"] == pinned == md5_file(repo / "models/model.zip")
    assert body["model"]["rev"] == "workspace" and body["model"]["name"] == "penguin-classifier"


def test_make_package_builds_the_image_of_the_pinned_model(clone):
    """`make package` from a fresh clone, the image (the target with the most parts: the base
    root filesystem, the Containerfile, buildah); every target's build, from this checkout, is
    in tests/system/test_package.py."""
    need_containers()
    repo, _ = clone
    lock = yaml.safe_load(run(["git", "show", "HEAD:dvc.lock"], cwd=repo).stdout)
    pinned = lock["stages"]["train"]["outs"][0]["md5"]
    commit = run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()
    env = venv_env(LOCKSERVE_PACKAGE_CACHE=str(ROOT / ".cache" / "lockserve"))  # shared base
    proc = subprocess.run(
        ["make", "package", "TARGET=oci"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for target in ("oci",):
        manifest = json.loads((repo / "dist" / target / "manifest.json").read_text())
        assert (manifest["md5"], manifest["commit"]) == (pinned, commit), target
        assert all((repo / "dist" / target / name).is_file() for name in manifest["files"])
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""  # dist/ is ignored


def test_metrics_are_sane_and_reviewable(clone):
    repo, _ = clone
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    committed = json.loads(run(["git", "show", "HEAD:reports/metrics.json"], cwd=repo).stdout)
    assert metrics == committed  # the fresh clone reproduced the committed figures exactly
    assert 0.7 < metrics["accuracy"] < 1.0 and 0.8 < metrics["roc_auc"] < 1.0
    assert metrics["onnx_label_agreement"] == 1.0
    shown = dvc("metrics", "show", "--json", cwd=repo).stdout
    assert json.loads(shown)[""]["data"]["reports/metrics.json"]["data"] == metrics


def test_plots_show_renders_offline_from_the_clone(clone, tmp_path):
    repo, _ = clone
    dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    for name in ["predictions", "curves", "importance"]:
        assert f"vegaEmbed('#reports_plots_{name}_csv', spec)" in page


def test_train_param_change_reruns_two_stages_and_moves_the_metrics(clone):
    repo, _ = clone
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        before = md5_file(repo / "models/model.zip")
        metrics_before = json.loads((repo / "reports/metrics.json").read_text())
        params["train"]["random_forest"]["min_samples_leaf"] = 10
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert stages_run(dvc("repro", cwd=repo)) == ["train", "evaluate"]
        assert md5_file(repo / "models/model.zip") != before
        diff = dvc("params", "diff", cwd=repo).stdout
        assert "train.random_forest.min_samples_leaf" in diff
        metrics_after = json.loads((repo / "reports/metrics.json").read_text())
        moved = {k for k in metrics_before if metrics_before[k] != metrics_after[k]}
        assert {"log_loss", "roc_auc"} <= moved  # what a reviewer sees in `dvc metrics diff`
        review = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
        changes = review["reports/metrics.json"]
        for key in moved:
            assert changes[key]["old"] == metrics_before[key]
            assert changes[key]["new"] == metrics_after[key]
    finally:
        restore(repo)


def test_raw_data_change_reruns_all_four(clone):
    repo, _ = clone
    try:
        raw = repo / "data/raw/penguins.csv"
        # a feature's value (bill_depth_mm) on one row: every stage's output changes
        raw.write_text(raw.read_text().replace("39.1,18.7,181,3750", "39.1,18.8,181,3750", 1))
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
