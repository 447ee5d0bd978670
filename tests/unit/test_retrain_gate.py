"""The promotion gate of `make retrain` (tools/retrain_gate.py): params, directions, verdicts,
versions; and which changes count as data (tools/retrain.py)."""

import numpy as np
import pytest
import yaml

from src import scores
from tests.conftest import ROOT
from tools.retrain import is_data
from tools.retrain_gate import (
    DIRECTIONS,
    HIGHER,
    LOWER,
    TASK_METRICS,
    GateError,
    Threshold,
    judge,
    next_version,
    settings,
)


def section(**per_task) -> dict:
    return {"stage": "prod", "bump": "minor", "max_drop": per_task}


CLASSIFICATION = section(classification={"accuracy": 0.01, "balanced_accuracy": 0.01})
REGRESSION = section(regression={"r2": 0.02, "rmse": "5%", "mae": 0.5})


# -- params -------------------------------------------------------------------------------------


def test_the_committed_params_declare_a_gate_for_both_tasks(params):
    for task in TASK_METRICS:
        found = settings(params["retrain"], task)
        assert found.stage == "prod" and found.bump in {"major", "minor", "patch"}
        assert found.thresholds and all(t.metric in TASK_METRICS[task] for t in found.thresholds)


def test_no_stage_depends_on_the_retrain_section():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            keys = [entry] if isinstance(entry, str) else [k for v in entry.values() for k in v]
            assert not any(str(k).split(".")[0] == "retrain" for k in keys), name


def test_settings_read_stage_bump_and_thresholds():
    found = settings(REGRESSION, "regression")
    assert (found.stage, found.bump) == ("prod", "minor")
    assert found.thresholds == (
        Threshold("r2", 0.02),
        Threshold("rmse", 0.05, relative=True),
        Threshold("mae", 0.5),
    )
    assert settings(REGRESSION, "regression", stage="staging").stage == "staging"
    defaults = settings({"max_drop": {"classification": {"accuracy": 0}}}, "classification")
    assert (defaults.stage, defaults.bump) == ("prod", "minor")


@pytest.mark.parametrize(
    ("retrain", "task", "stage", "message"),
    [
        (None, "classification", None, "params.yaml has no retrain section"),
        ([1], "classification", None, "retrain must be a mapping"),
        ({**CLASSIFICATION, "gate": 1}, "classification", None, "unknown key(s) ['gate']"),
        (CLASSIFICATION, "classification", "pr od", "retrain.stage: 'pr od' is not a GTO stage"),
        (CLASSIFICATION, "classification", "prod#1", "'prod#1' is not a GTO stage"),
        ({**CLASSIFICATION, "bump": "huge"}, "classification", None, "retrain.bump: 'huge'"),
        (CLASSIFICATION, "ranking", None, "prepare.task: 'ranking' is not one of"),
        ({"max_drop": 0.01}, "classification", None, "retrain.max_drop must map each task"),
        (
            section(classification={"accuracy": 0.01}, ranking={}),
            "classification",
            None,
            "retrain.max_drop: unknown task(s) ['ranking']",
        ),
        (CLASSIFICATION, "regression", None, "retrain.max_drop.regression names no metric"),
        (
            section(regression={}),
            "regression",
            None,
            "retrain.max_drop.regression names no metric",
        ),
        (
            section(classification={"r2": 0.01}),
            "classification",
            None,
            "retrain.max_drop.classification: 'r2' is not a classification metric",
        ),
        (
            section(regression={"n_test": 1}),
            "regression",
            None,
            "'n_test' is not a regression metric",
        ),
        (
            section(regression={"rmse": -1}),
            "regression",
            None,
            "retrain.max_drop.regression.rmse: -1 must be a finite number >= 0",
        ),
        (
            section(regression={"rmse": True}),
            "regression",
            None,
            "retrain.max_drop.regression.rmse: True is not a number",
        ),
        (
            section(regression={"rmse": "five%"}),
            "regression",
            None,
            "'five%' is neither a number nor a percentage like '5%'",
        ),
    ],
)
def test_settings_refuse_what_they_cannot_judge_naming_the_key(retrain, task, stage, message):
    with pytest.raises(GateError) as caught:
        settings(retrain, task, stage)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# -- directions ---------------------------------------------------------------------------------


def test_every_metric_the_pipeline_writes_has_a_direction_under_its_task():
    y = np.array(["a", "b", "a", "b"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    written = {
        "classification": set(scores.classification(y, proba, ["a", "b"])),
        "regression": set(scores.regression(np.array([1.0, 2.0, 3.0]), np.array([1.1, 1.9, 3.2]))),
    }
    for task, names in written.items():
        assert names <= set(TASK_METRICS[task]), task
        # src/evaluate.py adds the ONNX parity checks; n_test is a count, not a quality
        assert set(TASK_METRICS[task]) - names <= {"onnx_max_abs_diff", "onnx_label_agreement"}
    assert set(DIRECTIONS) == {m for names in TASK_METRICS.values() for m in names}
    assert [m for m, d in DIRECTIONS.items() if d == LOWER] == [
        "log_loss",
        "rmse",
        "mae",
        "onnx_max_abs_diff",
    ]
    assert all(d in (HIGHER, LOWER) for d in DIRECTIONS.values())


# -- verdicts -----------------------------------------------------------------------------------

STAGE = {"accuracy": 0.9, "balanced_accuracy": 0.912, "log_loss": 0.2, "n_test": 69}


def thresholds(retrain: dict, task: str = "classification") -> tuple[Threshold, ...]:
    return settings(retrain, task).thresholds


def test_a_drop_within_its_allowance_passes_and_beyond_it_is_refused_naming_the_metric():
    gate = thresholds(CLASSIFICATION)
    within = judge({**STAGE, "accuracy": 0.891, "balanced_accuracy": 0.902}, STAGE, gate)
    assert within.passed and not within.first and within.refused == ()
    beyond = judge({**STAGE, "accuracy": 0.95, "balanced_accuracy": 0.701}, STAGE, gate)
    assert not beyond.passed
    assert [c.metric for c in beyond.refused] == ["balanced_accuracy"]
    assert beyond.reason() == "balanced_accuracy 0.912 → 0.701 (−0.211, allowed −0.010)"


def test_a_drop_exactly_at_its_allowance_passes_despite_float_noise():
    gate = thresholds(section(classification={"accuracy": 0.02}))
    assert judge({"accuracy": 0.871429 - 0.02}, {"accuracy": 0.871429}, gate).passed
    assert not judge({"accuracy": 0.871429 - 0.0201}, {"accuracy": 0.871429}, gate).passed


def test_an_improvement_passes_with_a_zero_allowance():
    gate = thresholds(section(classification={"accuracy": 0, "log_loss": 0}))
    better = judge({"accuracy": 0.95, "log_loss": 0.1}, STAGE, gate)
    assert better.passed
    assert [c.describe() for c in better.comparisons] == [
        "accuracy 0.900 → 0.950 (+0.050, allowed +0.000)",
        "log_loss 0.200 → 0.100 (−0.100, allowed +0.000)",
    ]


def test_lower_is_better_metrics_are_worse_when_they_grow():
    gate = thresholds(REGRESSION, "regression")
    old = {"r2": 0.8, "rmse": 10.0, "mae": 7.0}
    assert judge({"r2": 0.8, "rmse": 9.0, "mae": 5.0}, old, gate).passed  # both fell: better
    grew = judge({"r2": 0.8, "rmse": 10.6, "mae": 7.6}, old, gate)
    assert [c.metric for c in grew.refused] == ["rmse", "mae"]
    assert grew.reason() == (
        "rmse 10.000 → 10.600 (+0.600, allowed +0.500 = 5%); "
        "mae 7.000 → 7.600 (+0.600, allowed +0.500)"
    )
    assert judge({"r2": 0.8, "rmse": 10.5, "mae": 7.5}, old, gate).passed  # at the allowance


def test_a_relative_allowance_scales_with_the_stages_value():
    gate = thresholds(section(regression={"rmse": "10%"}), "regression")
    assert judge({"rmse": 109.0}, {"rmse": 100.0}, gate).passed
    assert not judge({"rmse": 1.09 + 0.02}, {"rmse": 1.0}, gate).passed
    negative = thresholds(section(regression={"r2": "50%"}), "regression")  # r2 below zero
    assert judge({"r2": -0.3}, {"r2": -0.2}, negative).passed
    assert not judge({"r2": -0.31}, {"r2": -0.2}, negative).passed


def test_the_first_run_passes_whatever_the_metrics_and_says_so():
    verdict = judge({**STAGE, "accuracy": 0.1}, None, thresholds(CLASSIFICATION))
    assert verdict.passed and verdict.first and verdict.refused == ()
    assert verdict.comparisons[0].describe() == "accuracy 0.100 (nothing to compare with)"


def test_a_metric_the_stage_lacks_is_not_compared_and_one_now_undefined_is_refused():
    gate = thresholds(section(classification={"accuracy": 0.01, "roc_auc": 0.01}))
    older = judge({"accuracy": 0.9, "roc_auc": 0.5}, {"accuracy": 0.9}, gate)
    assert older.passed and not older.comparisons[1].compared
    undefined = judge({"accuracy": 0.9, "roc_auc": None}, {"accuracy": 0.9, "roc_auc": 0.97}, gate)
    assert [c.metric for c in undefined.refused] == ["roc_auc"]
    assert "roc_auc 0.970 → undefined" in undefined.reason()
    assert judge(
        {"accuracy": 0.9, "roc_auc": None}, {"accuracy": 0.9, "roc_auc": None}, gate
    ).passed


def test_a_threshold_on_a_metric_the_new_metrics_lack_is_an_error_not_a_verdict():
    gate = thresholds(section(classification={"accuracy": 0.01, "onnx_label_agreement": 0}))
    with pytest.raises(GateError) as caught:
        judge({"accuracy": 0.9, "n_test": 69}, STAGE, gate)
    assert str(caught.value) == (
        "retrain.max_drop names onnx_label_agreement, which the new metrics lack "
        "(they have accuracy)"
    )
    with pytest.raises(GateError, match="metric value 'high' is not a number"):
        judge({"accuracy": "high"}, STAGE, thresholds(section(classification={"accuracy": 0})))
    with pytest.raises(GateError, match="names no metric"):
        judge(STAGE, STAGE, ())


# -- versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latest", "bump", "expected"),
    [
        (None, "minor", "v1.0.0"),
        (None, "patch", "v1.0.0"),
        ("v1.0.0", "minor", "v1.1.0"),
        ("v1.2.3", "patch", "v1.2.4"),
        ("v1.2.3", "minor", "v1.3.0"),
        ("v1.2.3", "major", "v2.0.0"),
        ("v0.0.1", "minor", "v0.1.0"),
        ("v2.4.0-rc.1", "patch", "v2.4.1"),
    ],
)
def test_next_version(latest, bump, expected):
    assert next_version(latest, bump) == expected


def test_next_version_refuses_what_is_no_semver():
    with pytest.raises(GateError, match="'v1.2' is not a semantic version"):
        next_version("v1.2", "minor")
    with pytest.raises(GateError, match="bump 'micro'"):
        next_version("v1.2.0", "micro")


# -- what counts as data ------------------------------------------------------------------------


def test_only_the_pipelines_files_dvc_files_and_dvcs_gitignores_count_as_data():
    pipeline = {"dvc.lock", "reports/metrics.json", "reports/plots/curves.csv"}
    dirs = {"data/raw", "models"}
    for path in ("dvc.lock", "reports/metrics.json", "data/raw/penguins.csv.dvc", "x/y.dvc"):
        assert is_data(path, pipeline, dirs), path
    assert is_data("data/raw/.gitignore", pipeline, dirs)
    for path in ("params.yaml", "src/train.py", ".gitignore", "api/.gitignore", "dvc.yaml"):
        assert not is_data(path, pipeline, dirs), path
