"""Stage prepare: validate the raw table against the declared schema and split it.

Reads the raw table named by ``prepare.data`` (CSV or parquet under data/raw/) and the
``prepare`` params; writes the seeded train/test split (stratified for classification) and the
input schema the artifact will carry (data/prepared/).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from contract.schema import Schema
from src.raw_schema import Column, parse_columns, validate
from src.stage import StageError, load_params, main_wrapper, parquet_bytes, write_outputs
from src.tables import read_raw

log = logging.getLogger("lockserve.pipeline")

OUT = Path("data/prepared")
KEYS = {
    "data",
    "target",
    "task",
    "columns",
    "features",
    "max_missing_features",
    "invalid_rows",
    "test_size",
    "seed",
}


def split(
    frame: pd.DataFrame, target: str, test_size: float, seed: int, stratify: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split; stratified, every class on both sides, when ``stratify``."""
    if not isinstance(test_size, float | int) or not 0.0 < test_size < 1.0:
        raise StageError(f"params: test_size must be between 0 and 1, got {test_size}")
    if stratify:
        counts = frame[target].value_counts()
        rare = counts[counts < 2]
        if len(rare):
            raise StageError(
                f"class(es) with fewer than 2 rows cannot be split: {list(rare.index)}"
            )
    # Split row positions, stratified by class codes in the labels' sorted order: the split
    # sklearn makes from the frame and its labels, without taking every column twice or
    # sorting the label strings.
    codes = pd.factorize(frame[target], sort=True)[0] if stratify else None
    try:
        train_at, test_at = train_test_split(
            np.arange(len(frame)), test_size=test_size, random_state=seed, stratify=codes
        )
    except ValueError as exc:
        raise StageError(
            f"cannot split {len(frame)} rows with test_size={test_size}: {exc}"
        ) from None
    index = frame.index.to_numpy()
    # each side in index order (where its rows sit in the file), as sort_index() orders it
    train, test = (
        frame.iloc[at[np.argsort(index[at], kind="stable")]] for at in (train_at, test_at)
    )
    return train, test


def schema_document(
    columns: dict[str, Column],
    target: str,
    features: list[str],
    task: str,
    classes: list[str | int],
    max_missing_features: int,
) -> dict[str, Any]:
    """The input schema handed downstream (contract.schema): features, task, classes, rule."""
    return Schema(
        task,
        target,
        tuple(columns[name].feature() for name in features),
        tuple(classes),
        max_missing_features,
    ).to_json()


def run(params: dict[str, Any], out_dir: Path = OUT, raw_path: Path | None = None) -> None:
    """Validate the raw table and write train.parquet, test.parquet and schema.json."""
    unknown = set(params) - KEYS
    if unknown:
        raise StageError(f"params: prepare has unknown key(s) {sorted(unknown)}")
    missing = sorted(k for k in KEYS if k not in params)
    if missing:
        raise StageError(f"params: prepare lacks {', '.join(missing)}")
    columns = parse_columns(params["columns"])
    task, target = params["task"], params["target"]
    features = params["features"]
    raw, unit = read_raw(Path(raw_path or params["data"]))
    clean = validate(
        raw,
        columns,
        target,
        features,
        params["max_missing_features"],
        params["invalid_rows"],
        task,
        unit,
    )
    seed = params["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise StageError("params: prepare.seed must be an integer from 0 to 2**32 - 1")
    classification = task == "classification"
    train, test = split(clean, target, params["test_size"], params["seed"], classification)
    empty = [f for f in features if train[f].isna().all()]
    if empty:
        raise StageError(f"column '{empty[0]}' has no values in the training split")
    if train[target].nunique() < 2:  # regression: a split of a few rows can leave one value
        raise StageError(
            f"target '{target}' has a single value ({train[target].tolist()[0]!r}) in the "
            f"training split of {len(train)} row(s): nothing to learn"
        )
    log.info("split %d rows: %d train, %d test", len(clean), len(train), len(test))
    classes: list[str | int] = []
    if classification:
        seen = set(clean[target].tolist())
        classes = [c for c in columns[target].categories if c in seen]
        unseen = [c for c in columns[target].categories if c not in seen]
        if unseen:
            log.warning("declared class(es) %s have no valid rows", unseen)
    schema = schema_document(
        columns, target, features, task, classes, params["max_missing_features"]
    )
    write_outputs(
        {
            out_dir / "train.parquet": parquet_bytes(train.reset_index(drop=True)),
            out_dir / "test.parquet": parquet_bytes(test.reset_index(drop=True)),
            out_dir / "schema.json": (
                json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
            ).encode(),
        }
    )


if __name__ == "__main__":
    main_wrapper("prepare", lambda: run(load_params("prepare")))
