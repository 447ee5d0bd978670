"""Shared test helpers: the repo root, its params, tiny raw data, and commands in the venv."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "penguins.csv"
# One valid instance (a Gentoo) for requests in tests and benchmarks.
PENGUIN = {
    "island": "Biscoe",
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 217.0,
    "body_mass_g": 5200.0,
    "sex": "male",
}


# `make mutation` names a directory here (tools/mutation.py): the artifacts and the model repo
# below are built once, by its clean run, and reused by the run of every mutant, which would
# otherwise rebuild them (about 15 s) each time. Unset, every session builds its own.
REUSE = os.environ.get("LOCKSERVE_TEST_REUSE")

# No app a test builds listens for gRPC on the default port (8001): a test that wants the gRPC
# server gives it a free port of its own. Servers the tests start inherit this.
os.environ["LOCKSERVE_GRPC_PORT"] = "0"


def _clean_run() -> bool:
    """False while a mutant is switched on: what it builds is never kept for others."""
    return "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", "")


def reused(name: str, build: Callable[[], Any]) -> Any:
    """``build()``, or what a clean run of this mutation run built under ``name``."""
    if not REUSE:
        return build()
    path = Path(REUSE) / f"{name}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = build()
    if _clean_run():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(path)
    return value


def venv_env(**extra: str) -> dict[str, str]:
    """The environment a DVC stage needs: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a command with the venv on PATH; return it with stdout and stderr as text."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check)


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def penguins_csv() -> str:
    """The raw table as text, from the package that ships it."""
    import importlib.resources

    return importlib.resources.files("palmerpenguins").joinpath("data/penguins.csv").read_text()


@pytest.fixture()
def tiny_raw(tmp_path: Path, penguins_csv: str) -> Path:
    """A 60-row raw table (20 birds of each species, missing values included)."""
    from io import StringIO

    frame = pd.read_csv(StringIO(penguins_csv), dtype=str, keep_default_na=False)
    tiny = frame.groupby("species", group_keys=False).head(20)
    path = tmp_path / "raw" / "penguins.csv"
    path.parent.mkdir(parents=True)
    tiny.to_csv(path, index=False)
    return path


def build_artifact(root: Path, params: dict, raw_csv: str, **train_over) -> bytes:
    """Run the pipeline's stages in-process on ``raw_csv``; return model.zip's bytes."""
    from src import featurize, prepare, train

    raw = root / "raw.csv"
    root.mkdir(parents=True, exist_ok=True)
    raw.write_text(raw_csv)
    prepare.run(params["prepare"], root / "prepared", raw)
    featurize.run(params["featurize"], root / "prepared", root / "features")
    train_params = {**params["train"], **train_over}
    out = root / "model.zip"
    train.run(train_params, root / "features", root / "prepared", out)
    return out.read_bytes()


def declare(frame: pd.DataFrame, target: str, task: str) -> dict:
    """A prepare section for a synthetic table, every column declared from its values."""
    columns = {}
    for name in frame.columns:
        values = frame[name].dropna()
        if name == target and task != "regression":
            columns[name] = {"type": "category", "categories": sorted(values.unique().tolist())}
        elif pd.api.types.is_numeric_dtype(values):
            lo, hi = float(values.min()), float(values.max())
            columns[name] = {"type": "number", "min": lo - 1, "max": hi + 1}
        else:
            columns[name] = {"type": "category", "categories": sorted(values.unique())}
        columns[name]["nullable"] = bool(frame[name].isna().any())
    return {
        "data": "unused",
        "target": target,
        "task": task,
        "columns": columns,
        "features": [c for c in frame.columns if c != target],
        "max_missing_features": 3,
        "invalid_rows": "drop",
        "test_size": 0.25,
        "seed": 0,
    }


def build_table_artifact(root: Path, params: dict, frame: pd.DataFrame, task: str, **over):
    """Run the stages in-process on a synthetic ``frame`` (target column ``target``)."""
    from src import featurize, prepare, train

    root.mkdir(parents=True, exist_ok=True)
    raw = root / "raw.csv"
    frame.to_csv(raw, index=False)
    prepare.run(declare(frame, "target", task), root / "prepared", raw)
    featurize.run(params["featurize"], root / "prepared", root / "features")
    out = root / "model.zip"
    train.run({**params["train"], **over}, root / "features", root / "prepared", out)
    return out.read_bytes()


@pytest.fixture(scope="session")
def regression_artifacts(tmp_path_factory, params) -> dict[str, bytes]:
    """Two real regression artifacts on one synthetic table: a forest (v1), a ridge (v2)."""
    from tools import synth

    def build() -> dict[str, bytes]:
        frame = synth.table(400, 5, "regression", seed=4)
        base = tmp_path_factory.mktemp("regression")
        return {
            "v1": build_table_artifact(base / "v1", params, frame, "regression"),
            "v2": build_table_artifact(base / "v2", params, frame, "regression", estimator="ridge"),
        }

    return reused("regression_artifacts", build)


@pytest.fixture(scope="session")
def tiny_csv(penguins_csv) -> str:
    """90 birds (30 per species), missing values included, as CSV text."""
    from io import StringIO

    frame = pd.read_csv(StringIO(penguins_csv), dtype=str, keep_default_na=False)
    return frame.groupby("species", group_keys=False).head(30).to_csv(index=False)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, params, tiny_csv) -> dict[str, bytes]:
    """Two different real artifacts: v1 (the default forest) and v2 (a 5-tree forest)."""

    def build() -> dict[str, bytes]:
        base = tmp_path_factory.mktemp("artifacts")
        v2_forest = {**params["train"]["random_forest"], "n_estimators": 5}
        return {
            "v1": build_artifact(base / "v1", params, tiny_csv),
            "v2": build_artifact(base / "v2", params, tiny_csv, random_forest=v2_forest),
        }

    return reused("artifacts", build)


MODEL_REPO_DVC_YAML = """\
stages:
  train:
    cmd: cp build/model.zip models/model.zip
    deps: [build/model.zip]
    outs: [models/model.zip]
artifacts:
  penguin-classifier:
    path: models/model.zip
    type: model
"""


def git_init(repo: Path) -> Path:
    """An empty git repo at ``repo`` (made if missing) on branch main, with an identity."""
    repo.mkdir(parents=True, exist_ok=True)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "t"],
    ):
        run(cmd, cwd=repo)
    return repo


@contextlib.contextmanager
def json_handler_only() -> Iterator[None]:
    """The root logger with only the service's JSON handler, as in a server: pytest adds its
    own capture handlers while a test runs, which would send the access log down its general
    path (a record a line) instead of its own."""
    import logging

    from api import logs

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers[:] = [logs.HANDLER]
    try:
        yield
    finally:
        root.handlers[:] = kept


@contextlib.contextmanager
def in_process_dask() -> Iterator[Any]:
    """A Dask client of an in-process cluster: one worker, two threads, no dashboard."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


def pinned_repo(base: Path, versions: dict[str, bytes]) -> Path:
    """A git + DVC repo under ``base`` whose dvc.lock pins each artifact in turn (tagged with
    its key, the last one at HEAD), every one pushed to the local remote ``base/remote``."""
    repo, remote = base / "repo", base / "remote"
    git_init(repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "local", str(remote), cwd=repo)
    (repo / "dvc.yaml").write_text(MODEL_REPO_DVC_YAML)
    (repo / "build").mkdir()
    (repo / "models").mkdir()
    for tag, data in versions.items():
        (repo / "build" / "model.zip").write_bytes(data)
        dvc("repro", "-q", cwd=repo)
        dvc("push", "-q", cwd=repo)
        run(["git", "add", "-A"], cwd=repo)
        run(["git", "commit", "-q", "-m", tag], cwd=repo)
        run(["git", "tag", tag], cwd=repo)
    return repo


@pytest.fixture(scope="session")
def model_repo_template(tmp_path_factory, artifacts) -> Path:
    """A git + DVC repo whose dvc.lock pins v1 (tag v1) then v2 (tag v2, HEAD), both pushed."""
    kept = Path(REUSE) / "model-repo" if REUSE else None
    if kept is not None and kept.exists():
        return kept
    keep = kept is not None and _clean_run()
    if keep:
        base = kept.with_name(f"model-repo.{os.getpid()}")
    else:
        base = tmp_path_factory.mktemp("model-repo")
    pinned_repo(base, {"v1": artifacts["v1"], "v2": artifacts["v2"]})
    if keep:  # model_repo points each copy at its own remote, wherever the template sits
        try:
            base.rename(kept)
            return kept
        except OSError:  # another worker kept its template first; this one stays where it is
            pass
    return base


@pytest.fixture(scope="session")
def scored_base(tmp_path_factory, model_repo_template) -> Path:
    """The model repo with tables of precomputed answers at t1 and t2 (tests/lookup_repo.py):
    copy it (lookup_repo.copy) before changing anything."""
    from tests import lookup_repo

    base = tmp_path_factory.mktemp("lookup") / "built"
    lookup_repo.build(base, model_repo_template)
    return base


@pytest.fixture()
def model_repo(tmp_path, model_repo_template) -> Path:
    """A private copy of the template repo and its remote, safe to tamper with."""
    shutil.copytree(model_repo_template, tmp_path / "m", symlinks=True)
    repo = tmp_path / "m" / "repo"
    dvc("remote", "modify", "--local", "local", "url", str(tmp_path / "m" / "remote"), cwd=repo)
    return repo


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole session (`make redis`)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_session) -> str:
    """The session's Redis, emptied for this test."""
    with redis_session.client() as client:
        client.flushall()
    return redis_session.url


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) on free loopback ports, for the whole session."""
    from tools import seaweedfs

    server = seaweedfs.start(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    seaweedfs.stop(server)


def served_model(
    name: str, data: bytes, rev: str, backend: str = "onnx", metrics: dict | None = None
):
    """A ServedModel from artifact bytes, as the resolver would hand them over."""
    import hashlib

    from api.resolver import Resolved
    from api.store import load_model

    resolved = Resolved(
        "penguin-classifier",
        "models/model.zip",
        hashlib.md5(data).hexdigest(),
        rev,
        "c" * 40,
        "cache",
        data,
        metrics or {},
    )
    return load_model(name, resolved, backend)
