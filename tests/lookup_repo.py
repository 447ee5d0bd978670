"""A model repo whose DVC also tracks tables of precomputed answers, scored by `batch/`: tag t1
holds predictions/scored as model v1 answered, t2 (HEAD) as model v2 answered. For the tests
of static serving (api/lookup.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from api.resolver import resolve
from batch import score
from tests.conftest import PENGUIN, dvc, in_process_dask, run

TABLE = "predictions/scored"
KEY = "id"

# what is scored: good rows (one with a missing value), and one the API refuses
ROWS = [
    PENGUIN,
    {**PENGUIN, "island": "Dream", "bill_depth_mm": 18.4, "body_mass_g": 3700.0, "sex": None},
    {**PENGUIN, "island": "Torgersen", "flipper_length_mm": 190.0, "body_mass_g": 3400.0},
    {**PENGUIN, "island": "Mars"},
] * 5
IDS = [f"bird-{i:02d}" for i in range(len(ROWS))]
REFUSED = [i for i, row in enumerate(ROWS) if row["island"] == "Mars"]


def rows_csv(path: Path) -> Path:
    frame = pd.DataFrame(ROWS)
    frame.insert(0, KEY, IDS)
    frame.to_csv(path, index=False)
    return path


def score_and_pin(repo: Path, source: Path, model_rev: str, tag: str, client: Any) -> None:
    """Score ``source`` with the model ``model_rev`` pins into TABLE, `dvc add` it, commit,
    tag ``tag`` and push."""
    shutil.rmtree(repo / TABLE, ignore_errors=True)
    (repo / TABLE).parent.mkdir(exist_ok=True)
    score.score(str(source), str(repo / TABLE), resolve(repo, model_rev, None), [KEY], client)
    dvc("add", "-q", TABLE, cwd=repo)
    dvc("push", "-q", cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-q", "-m", f"answers of {model_rev}"], cwd=repo)
    run(["git", "tag", tag], cwd=repo)


def build(base: Path, template: Path) -> Path:
    """A copy of the model repo template under ``base`` with t1 and t2 (HEAD) as above."""
    shutil.copytree(template, base, symlinks=True)
    repo = base / "repo"
    dvc("remote", "modify", "--local", "local", "url", str(base / "remote"), cwd=repo)
    source = rows_csv(base / "rows.csv")
    with in_process_dask() as client:
        score_and_pin(repo, source, "v1", "t1", client)
        score_and_pin(repo, source, "v2", "t2", client)
    return repo


def copy(template_base: Path, dest: Path) -> Path:
    """A private copy of a built repo (and its remote) at ``dest``."""
    shutil.copytree(template_base, dest, symlinks=True)
    repo = dest / "repo"
    dvc("remote", "modify", "--local", "local", "url", str(dest / "remote"), cwd=repo)
    return repo
