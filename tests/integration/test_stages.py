"""Integration: each stage run on a tiny raw table in a temp dir, as DVC would run it."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from contract import artifact
from src import estimators, evaluate, featurize, onnx_export, prepare, train
from src.stage import StageError, canonical_pickle, md5_file
from tests.conftest import PENGUIN, declare
from tools import synth

CLASSIFICATION_METRICS = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}


def run_all(params, raw: Path, root: Path, train_params=None, prepare_params=None) -> dict:
    prepared, features = root / "prepared", root / "features"
    model, reports = root / "models" / "model.zip", root / "reports"
    prepare.run(prepare_params or params["prepare"], prepared, raw)
    featurize.run(params["featurize"], prepared, features)
    train.run(train_params or params["train"], features, prepared, model)
    return evaluate.run(params["evaluate"], model, prepared / "test.parquet", reports)


def outputs(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): md5_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def read(root: Path) -> artifact.Artifact:
    return artifact.read((root / "models/model.zip").read_bytes())


def test_pipeline_on_tiny_data_writes_every_out(params, tiny_raw, tmp_path):
    root = tmp_path / "work"
    scores = run_all(params, tiny_raw, root)
    assert set(outputs(root)) == {
        "prepared/train.parquet",
        "prepared/test.parquet",
        "prepared/schema.json",
        "features/train.parquet",
        "features/transformer.pkl",
        "models/model.zip",
        "reports/metrics.json",
        "reports/plots/predictions.csv",
        "reports/plots/curves.csv",
        "reports/plots/importance.csv",
    }
    assert set(scores) == {
        *CLASSIFICATION_METRICS,
        "n_test",
        "onnx_max_abs_diff",
        "onnx_label_agreement",
    }
    assert scores["onnx_max_abs_diff"] <= params["train"]["onnx_tolerance"]
    assert scores["onnx_label_agreement"] == 1.0
    rows = len(pd.read_csv(tiny_raw))
    assert scores["n_test"] == math.ceil(rows * params["prepare"]["test_size"])
    assert json.loads((root / "reports/metrics.json").read_text()) == scores
    curves = pd.read_csv(root / "reports/plots/curves.csv")
    assert sorted(curves["class"].unique()) == ["Adelie", "Chinstrap", "Gentoo"]
    assert len(curves) == 3 * params["evaluate"]["roc_points"]
    schema = json.loads((root / "prepared/schema.json").read_text())
    assert schema["max_missing_features"] == params["prepare"]["max_missing_features"]
    assert read(root).schema.max_missing_features == params["prepare"]["max_missing_features"]


def test_stages_are_deterministic(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path / "a")
    run_all(params, tiny_raw, tmp_path / "b")
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def test_featurize_fits_on_train_only(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tmp_path / "p", tiny_raw)
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    train_rows = pd.read_parquet(tmp_path / "p/train.parquet")
    imputer = pd.read_pickle(tmp_path / "f/transformer.pkl").named_transformers_["numeric"]
    first = list(imputer.feature_names_in_)[0]
    assert imputer.statistics_[0] == pytest.approx(train_rows[first].median())


def test_featurize_one_hot_ignores_unknown_and_encodes_missing(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tmp_path / "p", tiny_raw)
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    transformer = pd.read_pickle(tmp_path / "f/transformer.pkl")
    names = list(transformer.get_feature_names_out())
    numeric = [f for f in params["prepare"]["features"] if "mm" in f or f.endswith("_g")]
    assert names[: len(numeric)] == numeric
    row = pd.DataFrame([{**PENGUIN, "island": "Atlantis", "sex": float("nan")}])
    out = dict(zip(names, transformer.transform(row)[0], strict=True))
    assert not any(v for k, v in out.items() if k.startswith("island_"))
    assert (out["sex_missing"], out["sex_female"], out["sex_male"]) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("estimator", estimators.names("classification"))
def test_each_classifier_is_selectable_by_name(params, tiny_raw, tmp_path, estimator):
    train_params = {**params["train"], "estimator": estimator}
    scores = run_all(params, tiny_raw, tmp_path, train_params)
    meta = read(tmp_path).metadata
    assert meta["estimator"] == estimator and meta["params"] == train_params
    assert meta["onnx_exported"] and scores["onnx_label_agreement"] == 1.0
    assert scores["accuracy"] > 0.6


@pytest.mark.parametrize("estimator", estimators.names("regression"))
def test_each_regressor_is_selectable_and_gated(params, tmp_path, estimator):
    frame = synth.table(300, 6, "regression", seed=1)
    raw = tmp_path / "raw.csv"
    synth.write(frame, raw)
    train_params = {**params["train"], "estimator": estimator}
    scores = run_all(params, raw, tmp_path, train_params, declare(frame, "target", "regression"))
    parts = read(tmp_path)
    assert parts.task == "regression" and parts.metadata["onnx_exported"]
    gate = parts.metadata["onnx_gate"]
    assert gate["limit"] == pytest.approx(gate["tolerance"] * gate["target_std"])
    assert set(scores) == {*REGRESSION_METRICS, "n_test", "onnx_max_abs_diff"}
    assert scores["onnx_max_abs_diff"] <= gate["limit"] and scores["r2"] > 0.3
    plots = tmp_path / "reports/plots"
    assert list(pd.read_csv(plots / "curves.csv").columns) == ["predicted", "residual"]
    assert list(pd.read_csv(plots / "predictions.csv").columns) == ["actual", "predicted"]


def test_binary_integer_labels_keep_their_type_and_score_the_positive_class(params, tmp_path):
    frame = synth.table(300, 5, "binary", labels="integers", seed=2)
    raw = tmp_path / "raw.parquet"
    synth.write(frame, raw)
    scores = run_all(params, raw, tmp_path, None, declare(frame, "target", "classification"))
    parts = read(tmp_path)
    assert parts.classes == [0, 1] and parts.metadata["classes"] == [0, 1]
    assert set(pd.read_csv(tmp_path / "reports/plots/curves.csv")["class"]) == {1}
    assert 0.5 < scores["roc_auc"] <= 1.0


def test_artifact_is_self_contained(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path)
    parts = read(tmp_path)
    assert parts.schema.names == params["prepare"]["features"]
    assert parts.classes == params["prepare"]["columns"]["species"]["categories"]
    meta = parts.metadata
    assert meta["training_data"]["md5"] == md5_file(tmp_path / "features/train.parquet")
    assert set(meta["libraries"]) == {"python", "scikit-learn", "numpy", "skl2onnx", "onnx"}
    assert parts.sklearn_pipeline().predict(pd.DataFrame([PENGUIN]))[0] == "Gentoo"


def test_unknown_estimator_and_bad_hyper_parameter_are_named(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tmp_path / "p", tiny_raw)
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    args = (tmp_path / "f", tmp_path / "p", tmp_path / "m.zip")
    with pytest.raises(StageError, match="estimator 'svm' does not fit classification"):
        train.run({**params["train"], "estimator": "svm"}, *args)
    with pytest.raises(StageError, match="estimator 'ridge' does not fit classification"):
        train.run({**params["train"], "estimator": "ridge"}, *args)
    bad = {**params["train"], "random_forest": {"n_trees": 5}}
    with pytest.raises(StageError, match="bad hyper-parameter for random_forest"):
        train.run(bad, *args)
    bad = {**params["train"], "random_forest": {"n_estimators": 0}}
    with pytest.raises(StageError, match="'n_estimators' parameter of RandomForestClassifier"):
        train.run(bad, *args)
    with pytest.raises(StageError, match="train has unknown key\\(s\\) \\['estimators'\\]"):
        train.run({**params["train"], "estimators": "x"}, *args)
    assert not (tmp_path / "m.zip").exists()


BAD_RAW = {
    "missing column": (
        lambda f: f.drop(columns=["flipper_length_mm"]),
        "missing column\\(s\\): flipper_length_mm",
    ),
    "wrong dtype": (lambda f: f.assign(bill_depth_mm="deep"), "'bill_depth_mm' must be numeric"),
    "no rows": (lambda f: f.iloc[0:0], "raw table has no rows"),
    "unknown target": (
        lambda f: f.assign(species=["Emperor"] + list(f["species"][1:])),
        "target 'species' has value\\(s\\) \\['Emperor'\\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RAW))
def test_bad_raw_data_fails_and_leaves_outputs_untouched(params, tiny_raw, tmp_path, case):
    out = tmp_path / "p"
    prepare.run(params["prepare"], out, tiny_raw)
    before = outputs(out)
    change, message = BAD_RAW[case]
    bad = tmp_path / "bad.csv"
    change(pd.read_csv(tiny_raw, dtype=str, keep_default_na=False)).to_csv(bad, index=False)
    with pytest.raises(StageError, match=message):
        prepare.run(params["prepare"], out, bad)
    assert outputs(out) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "penguins.csv: file is empty"), (b"\xff\xfe\x00garbage", "not a readable csv")],
)
def test_unreadable_file_is_named(params, tmp_path, content, message):
    bad = tmp_path / "penguins.csv"
    bad.write_bytes(content)
    with pytest.raises(StageError, match=message):
        prepare.run(params["prepare"], tmp_path / "p", bad)


def test_a_raw_table_must_be_csv_or_parquet(params, tmp_path):
    with pytest.raises(StageError, match="must be .csv or .parquet"):
        prepare.run(params["prepare"], tmp_path / "p", tmp_path / "table.xlsx")


def other_models_graph(params, tmp_path: Path) -> artifact.Artifact:
    """The ONNX graph (and spec) of a 3-tree forest on the same features: a wrong graph."""
    other = {
        **params["train"],
        "random_forest": {**params["train"]["random_forest"], "n_estimators": 3},
    }
    train.run(other, tmp_path / "features", tmp_path / "prepared", tmp_path / "other.zip")
    return artifact.read((tmp_path / "other.zip").read_bytes())


def test_onnx_parity_gate_fails_evaluate_and_keeps_reports(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path)
    reports = outputs(tmp_path / "reports")
    other = other_models_graph(params, tmp_path)  # same inputs, different trees
    parts = read(tmp_path)
    bad = artifact.pack(
        canonical_pickle(parts.sklearn_pipeline()),
        parts.schema,
        parts.metadata,
        other.preprocess,
        other.onnx,
    )
    (tmp_path / "models/model.zip").write_bytes(bad)
    n_test = len(pd.read_parquet(tmp_path / "prepared/test.parquet"))
    rows = n_test + params["train"]["onnx_parity_rows"]
    with pytest.raises(StageError, match=f"ONNX export disagrees with sklearn on {rows} rows"):
        evaluate.run(
            params["evaluate"],
            tmp_path / "models/model.zip",
            tmp_path / "prepared/test.parquet",
            tmp_path / "reports",
        )
    assert outputs(tmp_path / "reports") == reports


def test_unconvertible_estimator_falls_back_to_sklearn(
    params, tiny_raw, tmp_path, monkeypatch, caplog
):
    import skl2onnx

    def refuse(*args, **kwargs):
        raise RuntimeError("Unable to find a shape calculator")

    monkeypatch.setattr(skl2onnx, "to_onnx", refuse)
    scores = run_all(params, tiny_raw, tmp_path)
    parts = read(tmp_path)
    assert parts.onnx is None and parts.metadata["onnx_exported"] is False
    assert "no ONNX export (RuntimeError: Unable to find a shape calculator)" in caplog.text
    assert "onnx_max_abs_diff" not in scores


def test_train_leaves_out_a_graph_that_disagrees(params, tiny_raw, tmp_path, monkeypatch, caplog):
    run_all(params, tiny_raw, tmp_path)
    wrong_graph = other_models_graph(params, tmp_path).onnx
    monkeypatch.setattr(onnx_export, "export", lambda *args: wrong_graph)
    rows = params["train"]["onnx_parity_rows"]
    train.run(params["train"], tmp_path / "features", tmp_path / "prepared", tmp_path / "m.zip")
    parts = artifact.read((tmp_path / "m.zip").read_bytes())
    assert parts.onnx is None and parts.metadata["onnx_exported"] is False
    refused = parts.metadata["onnx_gate"]["refused"]
    assert refused.startswith(f"ONNX export disagrees with sklearn on {rows} rows")
    assert f"{refused}; the artifact serves with sklearn only" in caplog.text


def test_a_target_float32_cannot_carry_trains_and_serves_with_sklearn(params, tmp_path):
    """Values of 1e6 + [0, 10]: float32 steps by 0.06 there, past the gate's limit."""
    frame = synth.table(300, 4, "regression", seed=5)
    frame["target"] = 1e6 + (frame["target"] - frame["target"].min()) / 25
    raw = tmp_path / "raw.csv"
    synth.write(frame, raw)
    scores = run_all(params, raw, tmp_path, None, declare(frame, "target", "regression"))
    parts = read(tmp_path)
    assert parts.onnx is None and "refused" in parts.metadata["onnx_gate"]
    assert scores["r2"] > 0.3 and "onnx_max_abs_diff" not in scores


def test_a_repeated_column_name_is_named(params, tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("species,island,island\nAdelie,Dream,Biscoe\n")
    with pytest.raises(StageError, match=r"column name\(s\) repeated: \['island'\]"):
        prepare.run(params["prepare"], tmp_path / "p", raw)


@pytest.mark.parametrize("seed", [-1, 2**32, True, "1"])
def test_prepare_seed_must_be_a_32_bit_integer(params, tiny_raw, tmp_path, seed):
    with pytest.raises(StageError, match="prepare.seed must be an integer from 0 to 2\\*\\*32 - 1"):
        prepare.run({**params["prepare"], "seed": seed}, tmp_path / "p", tiny_raw)
