"""Reading a user's raw table (CSV or parquet) and the frame conventions the stages share.

A raw table is read without guessing types: every value as a string (parquet numbers stay
numbers), missing values as NA, and the index set to where a row sits in the file (CSV: its
line, the header being line 1; parquet: its row number from 1) so errors can point at it.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.values import NA_VALUES
from src.stage import StageError

log = logging.getLogger("lockserve.pipeline")

SUFFIXES = (".csv", ".parquet")


def read_raw(path: Path) -> tuple[pd.DataFrame, str]:
    """The table at ``path`` and the word for its rows ("line" or "row")."""
    if path.suffix.lower() not in SUFFIXES:
        raise StageError(f"{path}: a raw table must be .csv or .parquet")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=NA_VALUES,
                engine="pyarrow",
            )
            frame.index = pd.RangeIndex(2, len(frame) + 2)
            unit = "line"
        else:
            frame = pd.read_parquet(path)
            frame.index = pd.RangeIndex(1, len(frame) + 1)
            unit = "row"
    except FileNotFoundError:
        raise StageError(f"{path}: no such file (run `dvc pull` or `make data`)") from None
    except (ValueError, OSError) as exc:  # pyarrow's parse errors are ValueError/ArrowInvalid
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Empty CSV file" in first or "no columns" in first.lower():
            if not path.read_bytes().strip():
                raise StageError(f"{path}: file is empty") from None
            first = "no columns found"
        raise StageError(f"{path}: not a readable {path.suffix[1:]} table: {first}") from None
    names = header(path) if unit == "line" else [str(c) for c in frame.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise StageError(f"{path}: column name(s) repeated: {dupes}")
    log.info("read %s: %d rows, %d columns", path, len(frame), len(frame.columns))
    return frame, unit


def header(path: Path) -> list[str]:
    """A CSV file's column names as written (the reader renames a repeated one to ``a.1``)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def categorical_as_object(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Category columns as plain Python strings with NaN for missing, as sklearn takes them."""
    out = frame.copy()
    for name in categorical:
        col = out[name]
        out[name] = col.astype(object).where(col.notna(), np.nan)
    return out


def records(frame: pd.DataFrame) -> list[list[Any]]:
    """Rows as lists of plain values (None for missing), in column order."""
    values = frame.astype(object).where(frame.notna(), None)
    return values.to_numpy().tolist()
