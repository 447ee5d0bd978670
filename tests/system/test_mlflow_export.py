"""System: `python -m package --target mlflow` exports the model this repo's dvc.lock pins at
HEAD as an MLflow pyfunc, and MLflow itself (in .venv-clients) answers as lockserve does.

The export is loaded with ``mlflow.pyfunc.load_model`` in a process that has MLflow, pandas and
onnxruntime and nothing of this repo (``python -I``, outside the repo): every row of the raw
table, and some with a number missing too, go through ``predict``; the rows lockserve's batch
scoring (batch.rows.Scorer, the service's validator and ONNX path) answers get the same labels
and probabilities, the rows it refuses are refused. Also: the signature and metadata MLflow
reads, bad inputs, a changed model zip, a second build's bytes, and a model that does not
verify (nothing written) or that does not answer its example (nothing published).
"""

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from api.resolver import Resolved
from batch.rows import Scorer, output_columns
from contract import artifact as contract_artifact
from contract.values import NA_VALUES
from tests.conftest import MODEL_REPO_DVC_YAML, RAW, ROOT, dvc, git_init, run, venv_env

pytestmark = pytest.mark.system

CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
FEATURES = ["island", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


def package(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "package", "--target", "mlflow", "--out", str(out), *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=300
    )


def manifest(out: Path) -> dict:
    return json.loads((out / "mlflow" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def export(tmp_path_factory, model_repo_template) -> dict:
    """The export of the model a repo's dvc.lock pins at HEAD (the suite's model repo, whose
    remote holds it: a fresh clone of this repo has no model until `make pipeline`), and the
    md5 and commit dvc.lock pinned it at."""
    assert CLIENTS_PYTHON.exists(), "run `make clients` (make test does)"
    base = tmp_path_factory.mktemp("models") / "m"
    shutil.copytree(model_repo_template, base, symlinks=True)
    repo = base / "repo"
    dvc("remote", "modify", "--local", "local", "url", str(base / "remote"), cwd=repo)
    out = tmp_path_factory.mktemp("dist")
    proc = package(out, "--repo", str(repo), "--rev", "HEAD")
    assert proc.returncode == 0, proc.stderr
    facts = manifest(out)
    lock = yaml.safe_load(run(["git", "show", f"{facts['commit']}:dvc.lock"], cwd=repo).stdout)
    (pinned,) = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.zip"]
    folder = out / "mlflow" / facts["mlflow_model"]
    return {"out": out, "folder": folder, "facts": facts, "md5": pinned["md5"]}


def table() -> pd.DataFrame:
    """Every row of the raw table, as the pipeline reads it, then six with a number missing
    (the raw table misses numbers only in rows missing four values or more): two missing one
    value, two missing two (the most training kept), two missing three (refused)."""
    raw = pd.read_csv(RAW, keep_default_na=False, na_values=NA_VALUES)
    extra = raw.dropna().iloc[:6].copy()
    extra.iloc[0:2, extra.columns.get_loc("bill_depth_mm")] = np.nan
    extra.iloc[2:4, [extra.columns.get_loc(c) for c in ("body_mass_g", "sex")]] = np.nan
    extra.iloc[4:6, [extra.columns.get_loc(c) for c in ("flipper_length_mm", "body_mass_g")]] = (
        np.nan
    )
    extra.iloc[4:6, extra.columns.get_loc("sex")] = np.nan
    return pd.concat([raw, extra], ignore_index=True)


@pytest.fixture(scope="module")
def compared(export, tmp_path_factory) -> dict:
    """lockserve's answers (batch scoring's Scorer on the verified bytes) and MLflow's."""
    data = (export["folder"] / "artifacts" / "model.zip").read_bytes()
    scorer = Scorer(data, export["md5"])  # refuses bytes that are not the pinned ones
    rows = table()
    lockserve = scorer(rows[FEATURES], keep=[])
    refused = lockserve["error"].notna().to_numpy()
    scratch = tmp_path_factory.mktemp("rows")
    rows[~refused].to_csv(scratch / "rows.csv", index=False)
    rows[refused].to_csv(scratch / "refused.csv", index=False)
    script = ROOT / "tests" / "clients" / "mlflow_model.py"
    command = [str(CLIENTS_PYTHON), "-I", "-B", str(script), str(export["folder"])]
    proc = subprocess.run(
        [*command, str(scratch / "rows.csv"), str(scratch / "refused.csv")],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    good = rows[~refused].iloc[:3].reset_index(drop=True).assign(sex=None)
    return {
        "rows": rows,
        "lockserve": lockserve,
        "refused": refused,
        "mlflow": json.loads(proc.stdout),
        "no_sex": scorer(good[FEATURES], keep=[]),
        "schema": contract_artifact.read(data).schema,
    }


def test_mlflow_answers_every_row_as_lockserve_does(compared):
    rows, lockserve, refused = compared["rows"], compared["lockserve"], compared["refused"]
    answered = lockserve[~refused].reset_index(drop=True)
    got = pd.DataFrame(compared["mlflow"]["predictions"])
    classes = compared["schema"].classes
    assert compared["mlflow"]["columns"] == ["label", *(f"proba_{c}" for c in classes)]
    assert compared["mlflow"]["index"] == list(range(len(answered)))  # the input's own index
    assert len(got) == len(answered) >= 340
    # the rows that exercise the preprocessing of a missing value are among those compared
    assert rows[~refused]["sex"].isna().sum() >= 10
    assert rows[~refused][["bill_depth_mm", "body_mass_g"]].isna().any(axis=1).sum() == 4
    assert got["label"].tolist() == answered["label"].tolist()
    columns = [f"proba_{c}" for c in classes]
    difference = np.abs(got[columns].to_numpy() - answered[columns].to_numpy()).max()
    assert difference <= 1e-6


def test_mlflow_refuses_the_rows_lockserve_refuses(compared):
    errors = compared["mlflow"]["refused"]
    assert len(errors) == compared["refused"].sum() == 4  # two raw rows, two of the six added
    for message in errors:
        assert message is not None and message.startswith("MlflowException: 1 of 1 rows refused")
        assert "(max_missing_features)" in message


def test_an_optional_column_left_out_is_missing_in_every_row(compared):
    got = pd.DataFrame(compared["mlflow"]["optional_left_out"])
    expected = compared["no_sex"]
    assert got["label"].tolist() == expected["label"].tolist()
    columns = [c for c in output_columns(compared["schema"]) if c != "label"]
    assert np.abs(got[columns].to_numpy() - expected[columns].to_numpy()).max() <= 1e-6


def test_bad_input_gets_a_clear_error(compared):
    bad = compared["mlflow"]["bad"]
    assert "Model is missing inputs ['island']" in bad["no_island"]
    assert (
        "Failed to convert column bill_depth_mm from type object to DataType.double"
        in (bad["text_depth"])
    )
    assert bad["number_sex"].endswith(
        "1 of 3 rows refused: row 1, column 'sex': 1 is not one of 'female', 'male'"
    )
    assert bad["unknown_island"].endswith(
        "row 1, column 'island': 'Atlantis' is not one of 'Biscoe', 'Dream', 'Torgersen'"
    )
    assert bad["deep_bill"].endswith("row 1, column 'bill_depth_mm': 99.0 is outside [10.0, 25.0]")
    assert bad["no_island_value"].endswith(
        "row 0, column 'island': a value is required (the column is not nullable)"
    )


def test_the_signature_is_the_artifact_schema(compared):
    schema = compared["schema"]
    inputs = compared["mlflow"]["signature"]["inputs"]
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        (f.name, "double" if f.type == "number" else "string", not f.nullable)
        for f in schema.features
    ]
    outputs = compared["mlflow"]["signature"]["outputs"]
    assert [c["name"] for c in outputs] == output_columns(schema)
    assert [c["type"] for c in outputs] == ["string"] + ["double"] * len(schema.classes)


def test_metadata_names_what_dvc_lock_pins(export, compared):
    pinned = compared["mlflow"]["metadata"]["lockserve"]
    commit = export["facts"]["commit"]
    assert pinned["md5"] == export["md5"] == export["facts"]["md5"]
    assert (pinned["commit"], pinned["rev"]) == (commit, commit)  # HEAD, recorded as its commit
    assert (pinned["artifact"], pinned["path"]) == ("penguin-classifier", "models/model.zip")
    assert compared["mlflow"]["loader"] == "mlflow.pyfunc.loaders.code_model"  # no pickle
    folder = export["folder"]
    assert (
        hashlib.md5((folder / "artifacts" / "model.zip").read_bytes()).hexdigest()
        == (export["md5"])
    )
    assert sorted(p.name for p in (folder / "code").iterdir()) == ["contract"]
    assert not [name for name in export["facts"]["files"] if "__pycache__" in name]
    locks = {}
    for name in ("clients.lock", "runtime.lock"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            if "==" in line and not line.startswith((" ", "#")):
                locks.setdefault(name, {})[line.split("==")[0]] = line
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements == [
        locks["clients.lock"][n] for n in ("mlflow-skinny", "numpy", "onnxruntime", "pandas")
    ]
    assert {locks["runtime.lock"][n] for n in ("numpy", "onnxruntime")} <= set(requirements)


def test_a_changed_model_zip_or_another_md5_is_not_loaded(export, compared):
    md5 = export["md5"]
    changed = compared["mlflow"]["changed_zip"]
    assert changed.startswith("MlflowException: model.zip has md5 ")
    assert changed.endswith(
        f"this model was exported for md5 {md5}: the model was changed; not loaded"
    )
    assert compared["mlflow"]["other_md5"] == (
        f"MlflowException: model.zip has md5 {md5}, this model was exported for md5 "
        f"{'0' * 32}: the model was changed; not loaded"
    )


def test_a_second_build_differs_only_in_what_mlflow_stamps_per_save(export, tmp_path):
    from api import bundle
    from package import Job, publish
    from package import mlflow as target

    facts = export["facts"]
    data = (export["folder"] / "artifacts" / "model.zip").read_bytes()
    resolved = Resolved(
        facts["artifact"], facts["path"], facts["md5"], facts["rev"], facts["commit"], "cache", data
    )
    work = tmp_path / "work"
    bundle.write(work / "bundle", resolved)
    job = Job(resolved, work / "bundle", work, True)
    publish("mlflow", job, target.build(job), tmp_path, 0.0)  # what python -m package runs
    first, second = facts["files"], manifest(tmp_path)["files"]
    assert first.keys() == second.keys()
    differ = [name for name in first if first[name] != second[name]]
    mlmodel = f"{export['facts']['mlflow_model']}/MLmodel"
    assert differ == [mlmodel]
    lines = [
        set((out / "mlflow" / mlmodel).read_text().splitlines())
        for out in (export["out"], tmp_path)
    ]
    assert sorted(line.split(":")[0] for line in lines[0] ^ lines[1]) == [
        "model_uuid",
        "model_uuid",
        "utc_time_created",
        "utc_time_created",
    ]


def test_a_model_that_does_not_verify_writes_nothing(export, tmp_path):
    data = (export["folder"] / "artifacts" / "model.zip").read_bytes()
    repo = git_init(tmp_path / "repo")
    (repo / ".dvc").mkdir()  # what `dvc init` and `dvc remote add -d` write, without DVC
    (repo / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    remote = f"[core]\n    remote = local\n['remote \"local\"']\n    url = {tmp_path / 'remote'}\n"
    (repo / ".dvc" / "config").write_text(remote)
    (repo / "dvc.yaml").write_text(MODEL_REPO_DVC_YAML)
    md5, size = hashlib.md5(data).hexdigest(), len(data)
    out = {"path": "models/model.zip", "hash": "md5", "md5": md5, "size": size}
    stage = {
        "cmd": "cp build/model.zip models/model.zip",
        "deps": [{**out, "path": "build/model.zip"}],
    }
    lock = {"schema": "2.0", "stages": {"train": {**stage, "outs": [out]}}}
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    (repo / "models").mkdir()
    (repo / "models" / ".gitignore").write_text("/model.zip\n")
    (repo / "models" / "model.zip").write_bytes(data[:-10] + b"0123456789")  # changed since
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-q", "-m", "pin"], cwd=repo)
    dist = tmp_path / "dist"
    proc = package(dist, "--repo", str(repo), "--rev", "main")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert f"package: models/model.zip md5 {md5} pinned at main is missing from" in last
    assert "Traceback" not in proc.stderr
    assert not dist.exists()  # nothing is written before the model verifies


def test_a_model_that_does_not_answer_its_example_is_not_published(
    export, tmp_path, monkeypatch, caplog
):
    from package import __main__ as cli

    data = (export["folder"] / "artifacts" / "model.zip").read_bytes()
    parts = contract_artifact.read(data)
    example = {**parts.metadata["example"], "bill_depth_mm": 99.0}  # outside the schema's range
    changed = contract_artifact.pack(
        parts.pickled,
        parts.schema,
        {**parts.metadata, "example": example},
        parts.preprocess,
        parts.onnx,
    )
    md5 = hashlib.md5(changed).hexdigest()
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", md5, "v9", "c" * 40, "cache", changed
    )
    monkeypatch.setattr(cli, "resolve", lambda *args, **kwargs: dataclasses.replace(resolved))
    out = tmp_path / "dist"
    (out / "mlflow").mkdir(parents=True)
    (out / "mlflow" / "last.txt").write_text("the last build")
    assert cli.main(["--out", str(out), "--target", "mlflow", "--rev", "v9"]) == 1
    assert (
        "package mlflow: writing the MLflow model failed: MlflowException: 1 of 1 rows refused: "
        "row 0, column 'bill_depth_mm': 99.0 is outside [10.0, 25.0]"
    ) in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["mlflow"]  # no scratch folder left
    assert [p.name for p in (out / "mlflow").iterdir()] == ["last.txt"]
