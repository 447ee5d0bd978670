"""The declared schema of the raw table and the rules that check a table against it.

Pure functions on pandas frames: the prepare stage reads the file and params, these decide.
Rows are named by where they sit in the file (the frame's index, see src/tables.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from contract.schema import TASKS, Feature
from src.stage import StageError

log = logging.getLogger("lockserve.pipeline")

MAX_LISTED = 10


@dataclass(frozen=True)
class Column:
    """One declared column: its type, domain or range, and whether it may be missing.

    Categories are strings, or integers for an integer-coded column (class labels such as 0/1).
    """

    name: str
    type: str  # "number" | "category"
    nullable: bool = True
    categories: tuple[str | int, ...] = ()
    min: float | None = None
    max: float | None = None

    @property
    def integer_coded(self) -> bool:
        return self.type == "category" and all(type(c) is int for c in self.categories)

    def feature(self) -> Feature:
        """The column as a model input in the artifact's schema (categories as strings)."""
        return Feature(
            self.name,
            self.type,
            self.nullable,
            tuple(str(c) for c in self.categories),
            self.min,
            self.max,
        )


def _category_values(name: str, cats: Any) -> tuple[str | int, ...]:
    if not isinstance(cats, list) or not cats:
        raise StageError(f"params: column '{name}' is a category with no categories")
    for c in cats:
        if isinstance(c, bool) or c is None:
            raise StageError(
                f"params: column '{name}' lists {c!r}, which YAML read as "
                f"{type(c).__name__}; quote it (e.g. '{str(c).lower()}')"
            )
        if not isinstance(c, str | int):
            raise StageError(f"params: column '{name}' category {c!r} is not a string or integer")
    if all(type(c) is int for c in cats):
        if any(not -(2**63) <= c < 2**63 for c in cats):
            raise StageError(f"params: column '{name}' lists an integer beyond 64 bits")
        values: tuple[str | int, ...] = tuple(cats)
    else:
        values = tuple(str(c) for c in cats)
    if len(set(values)) != len(values):
        raise StageError(f"params: column '{name}' lists a category twice")
    return values


def parse_columns(spec: Any) -> dict[str, Column]:
    """Build Column objects from the ``prepare.columns`` params, rejecting a bad declaration."""
    if not isinstance(spec, dict) or not spec:
        raise StageError("params: prepare.columns must map column names to declarations")
    columns = {}
    for name, decl in spec.items():
        name = str(name)
        if not isinstance(decl, dict):
            raise StageError(f"params: column '{name}' needs a mapping with a type")
        unknown = set(decl) - {"type", "categories", "min", "max", "nullable"}
        if unknown:
            raise StageError(f"params: column '{name}' has unknown key(s) {sorted(unknown)}")
        kind = decl.get("type")
        nullable = decl.get("nullable", True)
        if not isinstance(nullable, bool):
            raise StageError(f"params: column '{name}' nullable must be true or false")
        if kind == "category":
            cats = _category_values(name, decl.get("categories"))
            columns[name] = Column(name, kind, nullable, categories=cats)
        elif kind == "number":
            lo, hi = decl.get("min"), decl.get("max")
            try:
                bounds = float(lo), float(hi)  # the artifact's schema takes finite bounds
                ok = all(map(math.isfinite, bounds)) and bounds[0] < bounds[1]
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise StageError(f"params: column '{name}' needs numeric min < max, both finite")
            columns[name] = Column(name, kind, nullable, min=float(lo), max=float(hi))
        else:
            raise StageError(f"params: column '{name}' has type {kind!r}; use number or category")
    return columns


def where(index: pd.Index, unit: str) -> str:
    """Where rows sit in the file ("line(s) 4, 7 and 3 more"), shortened."""
    listed = ", ".join(str(int(i)) for i in index[:MAX_LISTED])
    more = f" and {len(index) - MAX_LISTED} more" if len(index) > MAX_LISTED else ""
    return f"{unit}(s) {listed}{more}"


def _parse_numbers(values: pd.Series) -> pd.Series:
    """Text as float64, the way ``pd.to_numeric(errors="coerce")`` reads it (NaN: missing or
    not a number).

    Text from the CSV reader (pyarrow-backed) is cast by Arrow, about five times faster. If Arrow
    refuses a value, or reads one as NaN or -0.0 (pandas reads "-0" as the integer 0), the
    whole column goes through pandas instead, so the result never depends on the way taken.
    """
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        try:
            cast = pc.cast(pa.array(values.array), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowException:
            cast = None
        if cast is not None:
            odd = (np.isnan(cast) & values.notna().to_numpy()) | ((cast == 0) & np.signbit(cast))
            if not odd.any():
                return pd.Series(cast, index=values.index, name=values.name)
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _numbers(name: str, values: pd.Series, unit: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        raise StageError(f"column '{name}' holds true/false values; declare it a category")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype("float64")
    parsed = _parse_numbers(values)
    bad = values.notna() & parsed.isna()
    if bad.any():
        sample = ", ".join(repr(v) for v in values[bad].astype(str).unique()[:3])  # lists too
        raise StageError(
            f"column '{name}' must be numeric; found {sample} on {where(values.index[bad], unit)}"
        )
    return parsed


def _strings(values: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(values.dtype):  # parquet: integer codes with NaN
        whole = values.dropna()
        if (whole == whole.round()).all():
            values = values.astype("Int64")
    text = values.astype("string")
    return text.astype(object).where(text.notna(), None)


def check_structure(raw: pd.DataFrame, columns: dict[str, Column], unit: str) -> pd.DataFrame:
    """Check the table has rows, every declared column, and values of the declared types.

    Returns the declared columns: numbers as float64 (NaN missing), categories as strings
    (None missing). Any violation raises StageError naming the column and the rows.
    """
    missing = [name for name in columns if name not in raw.columns]
    if missing:
        raise StageError(f"raw table is missing column(s): {', '.join(missing)}")
    if raw.empty:
        raise StageError("raw table has no rows")
    typed = {}
    for name, col in columns.items():
        values = raw[name]
        if col.type == "number":
            typed[name] = _numbers(name, values, unit)
        else:
            typed[name] = _strings(values)
    return pd.DataFrame(typed, index=raw.index)


def out_of_domain(values: pd.Series, col: Column) -> pd.Series:
    """True where a present value is outside the declared range or categories."""
    present = values.notna()
    if col.type == "number":
        return present & ~values.between(col.min, col.max)
    return present & ~values.isin([str(c) for c in col.categories])


def invalid_feature_rows(frame: pd.DataFrame, columns: dict[str, Column]) -> dict[str, pd.Index]:
    """Per column, the rows whose value is outside the declared domain, range or nullability."""
    problems: dict[str, pd.Index] = {}
    for name, col in columns.items():
        values = frame[name]
        bad = out_of_domain(values, col)
        if not col.nullable:
            bad |= values.isna()
        if bad.any():
            problems[name] = frame.index[bad]
    return problems


def _check_target(frame: pd.DataFrame, col: Column, task: str, unit: str) -> pd.DataFrame:
    """Drop rows without a target; refuse values outside its domain; type integer labels."""
    target = col.name
    if task == "classification" and col.type != "category":
        raise StageError(f"params: task classification needs target '{target}' declared a category")
    if task == "regression" and col.type != "number":
        raise StageError(f"params: task regression needs target '{target}' declared a number")
    absent = frame.index[frame[target].isna()]
    if len(absent):
        log.warning("dropping %d row(s) with no target: %s", len(absent), where(absent, unit))
        frame = frame.drop(index=absent)
    values = frame[target]
    if col.integer_coded:  # "1" and "1.0" both name class 1
        values = pd.to_numeric(values, errors="coerce")
        bad = ~values.isin(list(col.categories))
    else:
        bad = out_of_domain(values, col)
    if bad.any():
        found = sorted({str(v) for v in frame.loc[bad, target]})[:MAX_LISTED]
        domain = list(col.categories) if col.type == "category" else [col.min, col.max]
        raise StageError(
            f"target '{target}' has value(s) {found} outside {domain} on "
            f"{where(frame.index[bad], unit)}"
        )
    if col.integer_coded:
        frame = frame.assign(**{target: values.astype("int64")})
    return frame


def check_features_carry_signal(frame: pd.DataFrame, features: list[str]) -> None:
    """Refuse a feature with no values, or one value and never missing: nothing to learn."""
    for name in features:
        values = frame[name]
        present = values.dropna()
        if present.empty:
            raise StageError(f"column '{name}' has no values left: drop it from features")
        if present.nunique() == 1 and len(present) == len(values):
            raise StageError(
                f"column '{name}' is constant ({present.tolist()[0]!r}): drop it from features"
            )


def validate(
    raw: pd.DataFrame,
    columns: dict[str, Column],
    target: str,
    features: list[str],
    max_missing_features: int,
    invalid_rows: str,
    task: str,
    unit: str,
) -> pd.DataFrame:
    """Apply the schema and the row rules; return the clean table of features and target."""
    if task not in TASKS:
        raise StageError(f"params: task is {task!r}; use {' or '.join(TASKS)}")
    if not isinstance(target, str):
        raise StageError(f"params: target must be one column name, got {target!r}")
    if target not in columns:
        raise StageError(f"params: target '{target}' is not a declared column")
    if not isinstance(features, list) or not features:
        raise StageError("params: features must list at least one column")
    odd = [f for f in features if not isinstance(f, str)]
    if odd:
        raise StageError(f"params: features must list column names as strings, got {odd[0]!r}")
    undeclared = [f for f in features if f not in columns]
    if undeclared:
        raise StageError(f"params: feature(s) not declared in columns: {', '.join(undeclared)}")
    if target in features or len(set(features)) != len(features):
        raise StageError("params: features must be distinct and must not include the target")
    if invalid_rows not in ("drop", "fail"):
        raise StageError(f"params: invalid_rows is {invalid_rows!r}; use drop or fail")
    if (
        not isinstance(max_missing_features, int)
        or isinstance(max_missing_features, bool)
        or max_missing_features < 0
    ):
        raise StageError("params: max_missing_features must be a whole number >= 0")

    used = {name: columns[name] for name in [*features, target]}
    frame = check_structure(raw, used, unit)
    frame = _check_target(frame, used[target], task, unit)

    n_missing = frame[features].isna().sum(axis=1)
    sparse = frame.index[n_missing > max_missing_features]
    if len(sparse):
        log.info(
            "dropping %d row(s) missing more than %d feature values: %s",
            len(sparse),
            max_missing_features,
            where(sparse, unit),
        )
        frame = frame.drop(index=sparse)

    problems = invalid_feature_rows(frame, {f: used[f] for f in features})
    for name, rows in problems.items():
        message = f"column '{name}' is out of its declared domain on {where(rows, unit)}"
        if invalid_rows == "fail":
            raise StageError(message)
        log.warning("dropping: %s", message)
    if problems:
        bad = pd.Index(sorted(set().union(*problems.values())))
        frame = frame.drop(index=bad)
    if frame.empty:
        raise StageError("no valid rows left after applying the row rules")
    check_features_carry_signal(frame, features)
    if frame[target].nunique() < 2:
        raise StageError(
            f"target '{target}' has a single value ({frame[target].tolist()[0]!r}) in the valid "
            "rows: nothing to learn"
        )
    return frame[[*features, target]]
