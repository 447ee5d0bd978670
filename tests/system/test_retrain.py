"""System: `make retrain` in a fresh clone of the committed HEAD.

The clone's HEAD is registered as penguin-classifier v1.0.0 and assigned `prod`. A raw change
that keeps the metrics is promoted (a commit, v1.1.0, `prod` moved; `make retrain` itself, with
this venv); a change that leaves the model as it was has nothing to promote; a change that
ruins the labels is refused naming the metric, and `prod` stays. Errors stop before anything.
The clone runs this repo's venv (`python -m tools.retrain`) instead of building its own.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from api.resolver import git_rev
from tests.conftest import dvc, git_init, run, venv_env

pytestmark = pytest.mark.system

NAME = "penguin-classifier"
RAW = "data/raw/penguins.csv"
VENV = Path(sys.executable).parent.parent
GTO = str(VENV / "bin" / "gto")
ROOT = Path(__file__).resolve().parents[2]


def retrain(repo: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.retrain", *args],
        cwd=cwd or repo,
        env=venv_env(PYTHONPATH=str(repo)),
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def head(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], cwd=repo).stdout.strip()


def tags(repo: Path) -> list[str]:
    return run(["git", "tag", "--list", f"{NAME}*"], cwd=repo).stdout.split()


def model_md5(repo: Path, rev: str) -> str:
    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], cwd=repo).stdout)
    return {o["path"]: o["md5"] for o in lock["stages"]["train"]["outs"]}["models/model.zip"]


def edit_raw(repo: Path, change) -> None:
    frame = pd.read_csv(repo / RAW, dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(repo / RAW, index=False)


def heavier(frame: pd.DataFrame) -> None:
    """One bird (a training row) weighs 25 g more."""
    frame.loc[10, "body_mass_g"] = str(int(frame.loc[10, "body_mass_g"]) + 25)


def measured_later(frame: pd.DataFrame) -> None:
    """One bird measured in another year: no feature reads the year."""
    frame.loc[3, "year"] = "2010"


def shuffled(frame: pd.DataFrame) -> None:
    """The species of 80% of the birds shuffled among them."""
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(frame))[: int(len(frame) * 0.8)]
    frame.loc[rows, "species"] = rng.permutation(frame.loc[rows, "species"].to_numpy())


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone with the raw table in place and its HEAD at penguin-classifier#prod."""
    repo = tmp_path_factory.mktemp("retrain") / "lockserve"
    run(["git", "clone", "-q", str(ROOT), str(repo)], cwd=ROOT)
    for cmd in (
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
        [sys.executable, "-m", "tools.data"],  # bootstrapped and pushed to the clone's remote
        [GTO, "register", NAME, "HEAD", "--version", "v1.0.0"],
        [GTO, "assign", NAME, "--version", "v1.0.0", "--stage", "prod"],
    ):
        run(cmd, cwd=repo)
    return repo


def test_retrain_promotes_what_keeps_the_metrics_and_refuses_what_ruins_them(clone):
    v1 = head(clone)
    assert git_rev(clone, f"{NAME}#prod") == v1

    # another forest, the same test metrics -> promoted, through the Makefile's line
    edit_raw(clone, heavier)
    make = run(
        ["make", "--no-print-directory", "retrain", f"VENV={VENV}", "-o", f"{VENV}/.installed-dev"],
        cwd=clone,
        check=False,
    )
    out = make.stdout + make.stderr
    assert make.returncode == 0, out
    assert make.stdout.splitlines()[0].strip() == f"{VENV}/bin/python -m tools.retrain"
    v2 = head(clone)
    assert v2 != v1 and run(["git", "rev-parse", "HEAD^"], cwd=clone).stdout.strip() == v1
    assert f"gate passed against {NAME}@v1.0.0 ({v1[:12]})" in out
    assert "accuracy 0.899 → 0.899 (+0.000, allowed −0.020)" in out
    assert last_line(make) == (
        f"promoted: prod → {NAME}@v1.1.0 ({v2[:12]}), was {NAME}@v1.0.0 ({v1[:12]}); "
        "publish with: git push --follow-tags"
    )
    committed = set(
        run(["git", "show", "--format=", "--name-only", "HEAD"], cwd=clone).stdout.split()
    )
    assert (
        {"dvc.lock", f"{RAW}.dvc"}
        <= committed
        <= {
            "dvc.lock",
            f"{RAW}.dvc",
            "reports/metrics.json",
            "reports/plots/predictions.csv",
            "reports/plots/curves.csv",
            "reports/plots/importance.csv",
        }
    )
    message = run(["git", "log", "-1", "--format=%B"], cwd=clone).stdout
    assert message.startswith(f"Retrain {NAME} v1.1.0 for prod (was v1.0.0 at {v1[:12]})")
    assert run(["git", "status", "--porcelain"], cwd=clone).stdout == ""  # all of it committed
    assert "up to date" in dvc("status", cwd=clone).stdout
    assert sorted(tags(clone)) == sorted(
        [f"{NAME}@v1.0.0", f"{NAME}#prod#1", f"{NAME}@v1.1.0", f"{NAME}#prod#2"]
    )
    assert git_rev(clone, f"{NAME}#prod") == v2 == git_rev(clone, f"{NAME}@v1.1.0")
    pinned = model_md5(clone, "HEAD")
    assert pinned != model_md5(clone, v1)
    assert (clone / ".dvc-storage/files/md5" / pinned[:2] / pinned[2:]).is_file()  # dvc push
    assert "pushed " in out and f"models/model.zip {pinned}" in out

    # the same model -> nothing to promote, no version
    edit_raw(clone, measured_later)
    same = retrain(clone)
    assert same.returncode == 0, same.stderr
    assert "dvc repro: ran prepare\n" in same.stderr
    assert last_line(same) == (
        f"nothing to promote: models/model.zip md5 {pinned} is the model prod holds, "
        f"{NAME}@v1.1.0 ({v2[:12]}); uncommitted: data/raw/penguins.csv.dvc, dvc.lock"
    )
    assert head(clone) == v2 and len(tags(clone)) == 4

    # labels no longer follow the measurements -> refused, naming the metric; prod stays
    edit_raw(clone, shuffled)
    worse = retrain(clone)
    assert worse.returncode == 1, worse.stderr
    refusal = last_line(worse)
    assert refusal.startswith("gate refused: accuracy 0.899 → 0."), refusal
    assert "allowed −0.020); balanced_accuracy 0.871 → 0." in refusal
    assert refusal.endswith(
        f"; prod stays at {NAME}@v1.1.0 ({v2[:12]}); dvc.lock and the metrics as reproduced "
        f"stay uncommitted (dvc metrics diff {v2[:12]})"
    )
    assert head(clone) == v2 and len(tags(clone)) == 4
    assert git_rev(clone, f"{NAME}#prod") == v2
    assert (clone / "dvc.lock").read_text() != run(
        ["git", "show", "HEAD:dvc.lock"], cwd=clone
    ).stdout
    dirty = run(["git", "status", "--porcelain"], cwd=clone).stdout
    assert "dvc.lock" in dirty and "reports/metrics.json" in dirty


def test_errors_stop_before_anything_in_one_line(clone):
    before = (head(clone), tags(clone), (clone / f"{RAW}.dvc").read_text())

    (clone / "src/train.py").write_text((clone / "src/train.py").read_text() + "# local edit\n")
    try:
        dirty = retrain(clone)
    finally:
        run(["git", "checkout", "-q", "--", "src/train.py"], cwd=clone)
    assert dirty.returncode == 2
    assert dirty.stderr.strip() == (
        "retrain: tracked files other than data are changed (src/train.py): "
        "commit or revert them first"
    )

    below = retrain(clone, cwd=clone / "src")
    assert below.returncode == 2 and below.stderr.strip() == (
        f"retrain: run it from the repository's root, {clone}"
    )

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["retrain"]["max_drop"]["classification"] = {"r2": 0.01}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qm", "a regression metric for a classifier", "params.yaml"], cwd=clone)
    try:
        wrong = retrain(clone)
    finally:
        run(["git", "reset", "-q", "--keep", "HEAD~1"], cwd=clone)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (
        "retrain: params.yaml: retrain.max_drop.classification: 'r2' is not a classification "
        "metric (those are: accuracy, balanced_accuracy, f1_macro, roc_auc, log_loss, "
        "onnx_label_agreement, onnx_max_abs_diff)"
    )
    assert (head(clone), tags(clone), (clone / f"{RAW}.dvc").read_text()) == before


@pytest.fixture()
def tiny_repo(tmp_path):
    """A git repo with one commit and one changed file, for the promotion's failure paths."""
    repo = git_init(tmp_path / "tiny")
    (repo / "dvc.lock").write_text("one\n")
    run(["git", "add", "dvc.lock"], cwd=repo)
    run(["git", "commit", "-qm", "one"], cwd=repo)
    (repo / "dvc.lock").write_text("two\n")
    return repo


def test_a_failed_registration_undoes_the_commit_and_a_failed_assignment_says_how_to_finish(
    tiny_repo, monkeypatch
):
    import gto.api
    from gto.exceptions import GTOException

    from tools.retrain import FAILED, PARTIAL, RetrainError, promote

    parent = head(tiny_repo)

    def refuse(*args, **kwargs):
        raise GTOException("tag penguin-classifier@v1.1.0 is taken")

    monkeypatch.setattr(gto.api, "register", refuse)
    with pytest.raises(RetrainError) as caught:
        promote(tiny_repo, NAME, "prod", "v1.1.0", ["dvc.lock"], "Retrain")
    assert caught.value.code == FAILED
    message = str(caught.value)
    assert message.startswith(
        f"registering {NAME}@v1.1.0 failed: tag penguin-classifier@v1.1.0 is taken; the commit "
    )
    assert message.endswith(
        f" was undone (HEAD back at {parent[:12]}, changes staged); prod stays where it was"
    )
    assert head(tiny_repo) == parent and tags(tiny_repo) == []
    assert run(["git", "diff", "--cached", "--name-only"], cwd=tiny_repo).stdout == "dvc.lock\n"
    assert (tiny_repo / "dvc.lock").read_text() == "two\n"

    monkeypatch.undo()
    monkeypatch.setattr(gto.api, "assign", refuse)
    with pytest.raises(RetrainError) as caught:
        promote(tiny_repo, NAME, "prod", "v1.1.0", ["dvc.lock"], "Retrain")
    made = head(tiny_repo)
    assert made != parent and caught.value.code == PARTIAL
    assert str(caught.value) == (
        f"assigning prod to {NAME}@v1.1.0 (committed and registered at {made[:12]}) failed: "
        "tag penguin-classifier@v1.1.0 is taken; prod stays where it was; finish with: "
        f"gto assign {NAME} --version v1.1.0 --stage prod"
    )
    assert tags(tiny_repo) == [f"{NAME}@v1.1.0"]
