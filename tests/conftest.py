"""Shared test helpers: the repo root, its params, tiny raw data, and commands in the venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "penguins.csv"


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
