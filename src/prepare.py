"""Stage prepare: validate the raw table against the declared schema and split it.

Reads data/raw/penguins.csv and the ``prepare`` params; writes the stratified, seeded
train/test split and the input schema (data/prepared/).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.errors import EmptyDataError, ParserError
from sklearn.model_selection import train_test_split

from src.raw_schema import parse_columns, validate
from src.stage import StageError, load_params, main_wrapper, parquet_bytes, write_outputs

log = logging.getLogger("lockserve.pipeline")

RAW = Path("data/raw/penguins.csv")
OUT = Path("data/prepared")


def read_raw(path: Path) -> pd.DataFrame:
    """Read the raw CSV as strings (types are checked against the schema, not guessed)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "NA", "NaN"])
    except FileNotFoundError:
        raise StageError(f"{path}: no such file (run `dvc pull` or `make data`)") from None
    except EmptyDataError:
        raise StageError(f"{path}: file is empty") from None
    except ParserError as exc:
        raise StageError(f"{path}: not a readable CSV: {exc}") from None
    log.info("read %s: %d rows, %d columns", path, len(frame), len(frame.columns))
    return frame


def split(
    frame: pd.DataFrame, target: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded train/test split; every class must appear on both sides."""
    if not 0.0 < test_size < 1.0:
        raise StageError(f"params: test_size must be between 0 and 1, got {test_size}")
    counts = frame[target].value_counts()
    rare = counts[counts < 2]
    if len(rare):
        raise StageError(f"class(es) with fewer than 2 rows cannot be split: {list(rare.index)}")
    try:
        train, test = train_test_split(
            frame, test_size=test_size, random_state=seed, stratify=frame[target]
        )
    except ValueError as exc:
        raise StageError(
            f"cannot split {len(frame)} rows with test_size={test_size}: {exc}"
        ) from None
    return train.sort_index(), test.sort_index()


def schema_document(columns: dict, target: str, features: list[str]) -> dict[str, Any]:
    """The input schema handed downstream: feature declarations and the class labels."""
    return {
        "target": target,
        "classes": list(columns[target].categories),
        "features": [columns[name].to_json() for name in features],
    }


def run(params: dict[str, Any], raw_path: Path = RAW, out_dir: Path = OUT) -> None:
    """Validate ``raw_path`` and write train.parquet, test.parquet and schema.json."""
    columns = parse_columns(params["columns"])
    target, features = params["target"], list(params["features"])
    clean = validate(
        read_raw(raw_path),
        columns,
        target,
        features,
        int(params["max_missing_features"]),
        params["invalid_rows"],
    )
    train, test = split(clean, target, float(params["test_size"]), int(params["seed"]))
    log.info("split %d rows: %d train, %d test", len(clean), len(train), len(test))
    schema = schema_document(columns, target, features)
    write_outputs(
        {
            out_dir / "train.parquet": parquet_bytes(train.reset_index(drop=True)),
            out_dir / "test.parquet": parquet_bytes(test.reset_index(drop=True)),
            out_dir / "schema.json": (json.dumps(schema, indent=2) + "\n").encode(),
        }
    )


if __name__ == "__main__":
    main_wrapper("prepare", lambda: run(load_params("prepare")))
