"""Inferring a table's schema for `make init`: column types, domains, ranges, the task, and
what deserves a look. Pure functions on a raw frame (values as read by src/tables.py).

A column is a number when every present value parses as one, else a category; ranges get a
margin so new data slightly outside the observed range still validates. Columns that cannot
help a model (no values, one value, an identifier, free text) are left out of the features and
named, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from contract.schema import TASKS

MAX_CLASSES = 20  # a numeric target with at most this many integer values is a classification
MARGIN = 0.1  # ranges are widened by this share of the observed span on each side
MANY_CATEGORIES = 50  # more levels than this deserves a look (one-hot width)
FREE_TEXT_SHARE = 0.5  # a category with more distinct values than this share of rows: free text
MIN_ROWS_FOR_ID = 20


@dataclass
class Inferred:
    """What `make init` learned of a table."""

    task: str
    columns: dict[str, dict[str, Any]]
    features: list[str]
    excluded: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    notes: list[str] = field(default_factory=list)  # what deserves a look


def _nice(value: float, down: bool) -> float:
    """``value`` rounded outward to 3 significant digits (a readable bound)."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    scale = 10 ** (math.floor(math.log10(abs(value))) - 2)
    rounded = (math.floor if down else math.ceil)(value / scale) * scale
    return float(f"{rounded:.12g}")


def numbers(values: pd.Series) -> pd.Series | None:
    """The column as float64 if every present value is a number, else None."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return None
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64")
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    if (values.notna() & parsed.isna()).any():
        return None
    return parsed


def strings(values: pd.Series) -> pd.Series:
    """The column's present values as strings (integral floats without a trailing .0)."""
    present = values.dropna()
    if pd.api.types.is_float_dtype(present.dtype) and (present == present.round()).all():
        present = present.astype("int64")
    return present.astype(str)


def number_declaration(parsed: pd.Series, nullable: bool) -> dict[str, Any]:
    lo, hi = float(parsed.min()), float(parsed.max())
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    low, high = _nice(lo - MARGIN * span, True), _nice(hi + MARGIN * span, False)
    if lo >= 0 > low:  # a column never negative (counts, amounts) stays so
        low = 0.0
    if not low < high:
        low, high = lo - 1.0, hi + 1.0
    return {"type": "number", "min": low, "max": high, "nullable": nullable}


def category_declaration(values: pd.Series, nullable: bool) -> dict[str, Any]:
    return {"type": "category", "categories": sorted(set(strings(values))), "nullable": nullable}


def infer_task(target: pd.Series) -> str:
    """classification for a non-numeric target or one with few integer values, else
    regression."""
    parsed = numbers(target.dropna())
    if parsed is None:
        return "classification"
    whole = bool((parsed == parsed.round()).all())
    return "classification" if whole and parsed.nunique() <= MAX_CLASSES else "regression"


def target_declaration(target: pd.Series, name: str, task: str, notes: list[str]) -> dict:
    """The target's declaration for ``task``; ValueError when the target cannot serve it."""
    present = target.dropna()
    if present.empty:
        raise ValueError(f"target '{name}' has no values")
    if present.nunique() < 2:
        raise ValueError(f"target '{name}' has a single value ({present.iloc[0]!r})")
    missing = int(target.isna().sum())
    if missing:
        notes.append(f"{missing} row(s) have no '{name}' and will be dropped by prepare")
    parsed = numbers(present)
    if task == "regression":
        if parsed is None:
            raise ValueError(f"target '{name}' is not numeric: regression needs numbers")
        return number_declaration(parsed, False)
    if parsed is not None and bool((parsed == parsed.round()).all()):
        labels = parsed.astype("int64")
        classes: list[Any] = sorted(int(v) for v in labels.unique())
    else:
        labels = strings(present)
        classes = sorted(set(labels))
    if len(classes) > MAX_CLASSES:
        notes.append(
            f"target '{name}' has {len(classes)} classes: is this a regression? (TASK=regression)"
        )
    counts = labels.value_counts()
    rare = sorted(str(c) for c in counts[counts < 2].index)
    if rare:
        notes.append(
            f"class(es) {rare} of '{name}' have a single row: prepare cannot split them "
            "(remove or merge them)"
        )
    return {"type": "category", "categories": classes, "nullable": False}


def infer(frame: pd.DataFrame, target: str, task: str | None = None) -> Inferred:
    """Declarations for every column, the task, the features, and what deserves a look."""
    if target not in frame.columns:
        raise ValueError(
            f"target '{target}' is not a column of the table (columns: "
            f"{', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise ValueError("the table has no rows")
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r}: use {' or '.join(TASKS)}")
    chosen = task or infer_task(frame[target])
    notes: list[str] = []
    columns = {target: target_declaration(frame[target], target, chosen, notes)}
    features, excluded = [], {}
    rows = len(frame)
    for name in frame.columns:
        if name == target:
            continue
        values = frame[name]
        present = values.dropna()
        nullable = bool(values.isna().any())
        parsed = numbers(values)
        distinct = present.nunique()
        if present.empty:
            excluded[name] = "no values"
            continue
        if distinct == 1 and not nullable:
            excluded[name] = f"constant ({present.iloc[0]!r})"
            continue
        if parsed is None:
            declaration = category_declaration(values, nullable)
            if rows >= MIN_ROWS_FOR_ID and distinct == len(present):
                excluded[name] = "an identifier (every value differs)"
                continue
            if rows >= MIN_ROWS_FOR_ID and distinct > FREE_TEXT_SHARE * len(present):
                excluded[name] = f"free text ({distinct} distinct values in {len(present)} rows)"
                continue
            if distinct > MANY_CATEGORIES:
                notes.append(f"'{name}' has {distinct} categories: {distinct} one-hot inputs")
        else:
            whole = bool((parsed.dropna() == parsed.dropna().round()).all())
            if rows >= MIN_ROWS_FOR_ID and whole and distinct == len(present):
                step = parsed.dropna().sort_values().diff().dropna()
                if len(step) and (step == 1).all():
                    excluded[name] = "an identifier (consecutive whole numbers)"
                    continue
            declaration = number_declaration(parsed.dropna(), nullable)
        columns[name] = declaration
        features.append(name)
    if not features:
        raise ValueError(
            "no column can be a feature ("
            + "; ".join(f"{n}: {why}" for n, why in excluded.items())
            + ")"
        )
    return Inferred(chosen, columns, features, excluded, notes)
