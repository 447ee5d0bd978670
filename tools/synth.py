"""Synthetic tables of any size, width and task, for tests and the pipeline benchmark.

``python -m tools.synth OUT.csv|OUT.parquet --rows N --features F --task multiclass`` writes a
seeded table: numeric columns ``x<i>`` (normal, some missing), categorical columns ``c<i>``
(a few levels, some missing) and a ``target`` that depends on both through a noisy latent
score, so metrics are good but not perfect. Classification targets are the latent score's
quantiles (balanced classes); regression targets are the score itself.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("lockserve.synth")

TASKS = ("binary", "multiclass", "regression")
UNICODE = "Längd {i} (mm)"  # a name with a space, non-ASCII letters and brackets


def table(
    rows: int,
    features: int,
    task: str,
    classes: int = 3,
    categorical: float = 0.3,
    missing: float = 0.02,
    noise: float = 0.5,
    seed: int = 0,
    names: str = "plain",
    labels: str = "strings",
) -> pd.DataFrame:
    """The table as a frame (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {', '.join(TASKS)}")
    rng = np.random.default_rng(seed)
    n_cat = round(features * categorical)
    n_num = features - n_cat
    latent = np.zeros(rows)
    columns: dict[str, object] = {}
    for i in range(n_num):
        values = rng.normal(0.0, 1.0, rows)
        latent += rng.uniform(-1, 1) * values
        values = np.round(values * 10 + 50, 2)
        values[rng.random(rows) < missing] = np.nan
        columns[UNICODE.format(i=i) if names == "unicode" else f"x{i}"] = values
    for i in range(n_cat):
        levels = np.array([f"level_{k}" for k in range(2 + i % 5)], dtype=object)
        codes = rng.integers(0, len(levels), rows)
        latent += rng.normal(0, 1, len(levels))[codes]
        values = levels[codes]
        values[rng.random(rows) < missing] = None
        columns[f"kategori {i}" if names == "unicode" else f"c{i}"] = values
    latent += rng.normal(0.0, noise * (latent.std() or 1.0), rows)
    if task == "regression":
        target: object = np.round(latent * 25 + 100, 3)
    else:
        k = 2 if task == "binary" else classes
        edges = np.quantile(latent, np.linspace(0, 1, k + 1)[1:-1])
        codes = np.searchsorted(edges, latent)
        if labels == "integers":
            target = codes
        else:
            target = np.array([f"class_{c}" for c in range(k)], dtype=object)[codes]
    frame = pd.DataFrame(columns)
    frame["target"] = target
    return frame


def write(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False, lineterminator="\n")


def share(text: str) -> float:
    """A command-line fraction in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--task", choices=TASKS, default="multiclass")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument(
        "--categorical", type=share, default=0.3, help="share of the features that are categories"
    )
    parser.add_argument("--missing", type=share, default=0.02, help="share of values missing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names", choices=("plain", "unicode"), default="plain")
    parser.add_argument("--labels", choices=("strings", "integers"), default="strings")
    args = parser.parse_args()
    frame = table(
        args.rows,
        args.features,
        args.task,
        args.classes,
        args.categorical,
        args.missing,
        seed=args.seed,
        names=args.names,
        labels=args.labels,
    )
    write(frame, args.out)
    log.info("wrote %s: %d rows x %d columns (%s)", args.out, *frame.shape, args.task)


if __name__ == "__main__":
    main()
