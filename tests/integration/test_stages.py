"""Integration: each stage run on a tiny raw table in a temp dir, as DVC would run it."""

import json
from pathlib import Path

import pandas as pd
import pytest

from src import artifact, bootstrap, evaluate, featurize, onnx_export, prepare, train
from src.stage import StageError, md5_file
from tests.conftest import PENGUIN, ROOT


def run_all(params, raw: Path, root: Path, train_params=None) -> dict:
    prepared, features = root / "prepared", root / "features"
    model, reports = root / "models" / "model.zip", root / "reports"
    prepare.run(params["prepare"], raw, prepared)
    featurize.run(params["featurize"], prepared, features)
    train.run(train_params or params["train"], features, prepared / "schema.json", model)
    return evaluate.run(params["evaluate"], model, prepared / "test.parquet", reports)


def outputs(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): md5_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_pipeline_on_tiny_data_writes_every_out(params, tiny_raw, tmp_path):
    root = tmp_path / "work"
    scores = run_all(params, tiny_raw, root)
    assert set(outputs(root)) == {
        "prepared/train.parquet",
        "prepared/test.parquet",
        "prepared/schema.json",
        "features/train.parquet",
        "features/test.parquet",
        "features/transformer.pkl",
        "models/model.zip",
        "reports/metrics.json",
        "reports/plots/confusion.csv",
        "reports/plots/roc.csv",
        "reports/plots/importance.csv",
    }
    assert set(scores) == {
        "accuracy",
        "f1_macro",
        "roc_auc_ovr",
        "log_loss",
        "n_test",
        "onnx_max_abs_diff",
        "onnx_label_agreement",
    }
    assert scores["onnx_max_abs_diff"] <= 1e-5 and scores["onnx_label_agreement"] == 1.0
    assert scores["n_test"] == 12 and 0.0 <= scores["accuracy"] <= 1.0
    assert json.loads((root / "reports/metrics.json").read_text()) == scores


def test_stages_are_deterministic(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path / "a")
    run_all(params, tiny_raw, tmp_path / "b")
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def test_featurize_fits_on_train_only(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tiny_raw, tmp_path / "p")
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    train_rows = pd.read_parquet(tmp_path / "p/train.parquet")
    imputer = pd.read_pickle(tmp_path / "f/transformer.pkl").named_transformers_["numeric"]
    expected = train_rows["bill_length_mm"].median()
    assert imputer.statistics_[0] == pytest.approx(expected)


def test_featurize_one_hot_ignores_unknown_and_encodes_missing(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tiny_raw, tmp_path / "p")
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    transformer = pd.read_pickle(tmp_path / "f/transformer.pkl")
    names = list(transformer.get_feature_names_out())
    assert names[:4] == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    row = pd.DataFrame(
        [
            {
                "island": "Atlantis",
                "bill_length_mm": float("nan"),
                "bill_depth_mm": 17.0,
                "flipper_length_mm": 190.0,
                "body_mass_g": 3700.0,
                "sex": float("nan"),
            }
        ]
    )
    out = dict(zip(names, transformer.transform(row)[0], strict=True))
    assert not any(v for k, v in out.items() if k.startswith("island_"))
    assert (out["sex_missing"], out["sex_female"], out["sex_male"]) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("estimator", ["random_forest", "gradient_boosting", "logistic_regression"])
def test_each_estimator_is_selectable_by_name(params, tiny_raw, tmp_path, estimator):
    train_params = {**params["train"], "estimator": estimator}
    scores = run_all(params, tiny_raw, tmp_path, train_params)
    _, _, meta = artifact.unpack((tmp_path / "models/model.zip").read_bytes())
    assert meta["estimator"] == estimator and meta["params"] == train_params
    assert scores["accuracy"] > 0.6


def test_artifact_is_self_contained(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path)
    model, schema, meta = artifact.unpack((tmp_path / "models/model.zip").read_bytes())
    assert [f["name"] for f in schema["features"]] == params["prepare"]["features"]
    assert meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert meta["training_data"]["md5"] == md5_file(tmp_path / "features/train.parquet")
    assert set(meta["libraries"]) == {"python", "scikit-learn", "numpy", "skl2onnx", "onnx"}
    raw = pd.DataFrame([PENGUIN])
    assert model.predict(raw)[0] == "Gentoo"


def test_unknown_estimator_and_bad_hyper_parameter_are_named(params, tiny_raw, tmp_path):
    prepare.run(params["prepare"], tiny_raw, tmp_path / "p")
    featurize.run(params["featurize"], tmp_path / "p", tmp_path / "f")
    args = (tmp_path / "f", tmp_path / "p/schema.json", tmp_path / "m.zip")
    with pytest.raises(StageError, match="estimator is 'svm'"):
        train.run({**params["train"], "estimator": "svm"}, *args)
    bad = {**params["train"], "random_forest": {"n_trees": 5}}
    with pytest.raises(StageError, match="bad hyper-parameter for random_forest"):
        train.run(bad, *args)
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
    prepare.run(params["prepare"], tiny_raw, out)
    before = outputs(out)
    change, message = BAD_RAW[case]
    bad = tmp_path / "bad.csv"
    change(pd.read_csv(tiny_raw, dtype=str, keep_default_na=False)).to_csv(bad, index=False)
    with pytest.raises(StageError, match=message):
        prepare.run(params["prepare"], bad, out)
    assert outputs(out) == before


def test_empty_file_is_named(params, tmp_path):
    empty = tmp_path / "penguins.csv"
    empty.write_bytes(b"")
    with pytest.raises(StageError, match="penguins.csv: file is empty"):
        prepare.run(params["prepare"], empty, tmp_path / "p")


def test_bootstrap_checks_md5_against_the_dvc_file(tmp_path):
    good = tmp_path / "penguins.csv.dvc"
    good.write_text((ROOT / "data/raw/penguins.csv.dvc").read_text())
    bootstrap.run(good)
    assert md5_file(tmp_path / "penguins.csv") == bootstrap.pinned_md5(good)

    wrong = tmp_path / "other" / "penguins.csv.dvc"
    wrong.parent.mkdir()
    wrong.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  path: penguins.csv\n")
    with pytest.raises(StageError, match="pins 0123456789abcdef0123456789abcdef"):
        bootstrap.run(wrong)
    assert not (wrong.parent / "penguins.csv").exists()


def other_models_graph(params, tmp_path: Path) -> dict:
    """The ONNX graph (and spec) of a 3-tree forest on the same features: a wrong graph."""
    other = {
        **params["train"],
        "random_forest": {**params["train"]["random_forest"], "n_estimators": 3},
    }
    train.run(
        other, tmp_path / "features", tmp_path / "prepared/schema.json", tmp_path / "other.zip"
    )
    return artifact.unpack((tmp_path / "other.zip").read_bytes())[2]


def test_onnx_parity_gate_fails_the_stage_and_keeps_reports(params, tiny_raw, tmp_path):
    run_all(params, tiny_raw, tmp_path)
    reports = outputs(tmp_path / "reports")
    # swap in the ONNX graph of another model: same inputs, different trees
    other_meta = other_models_graph(params, tmp_path)
    model, schema, meta = artifact.unpack((tmp_path / "models/model.zip").read_bytes())
    meta = {k: v for k, v in meta.items() if k not in ("preprocess", "onnx")}
    from src.stage import canonical_pickle

    bad = artifact.pack(
        canonical_pickle(model), schema, meta, other_meta["preprocess"], other_meta["onnx"]
    )
    (tmp_path / "models/model.zip").write_bytes(bad)
    with pytest.raises(StageError, match="ONNX export disagrees with sklearn on 3012 rows"):
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
    _, _, meta = artifact.unpack((tmp_path / "models/model.zip").read_bytes())
    assert meta["onnx"] is None
    assert "no ONNX export (RuntimeError: Unable to find a shape calculator)" in caplog.text
    assert "onnx_max_abs_diff" not in scores


def test_train_refuses_an_onnx_graph_that_disagrees(params, tiny_raw, tmp_path, monkeypatch):
    run_all(params, tiny_raw, tmp_path)
    before = outputs(tmp_path / "models")
    wrong_graph = other_models_graph(params, tmp_path)["onnx"]
    monkeypatch.setattr(onnx_export, "export", lambda estimator, n_inputs: wrong_graph)
    with pytest.raises(StageError, match="ONNX export disagrees with sklearn on 3000 rows"):
        train.run(
            params["train"],
            tmp_path / "features",
            tmp_path / "prepared/schema.json",
            tmp_path / "models/model.zip",
        )
    assert outputs(tmp_path / "models") == before
