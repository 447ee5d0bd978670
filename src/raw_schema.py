"""The declared schema of the raw table and the rules that check a table against it.

Pure functions on pandas frames: the prepare stage reads the file and params, these decide.
Rows are named by their line in the CSV file (the header is line 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from src.stage import StageError

log = logging.getLogger("lockserve.pipeline")

MAX_LISTED = 10


@dataclass(frozen=True)
class Column:
    """One declared column: its type, domain or range, and whether it may be missing."""

    name: str
    type: str  # "number" | "category"
    nullable: bool = True
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.type == "category":
            out["categories"] = list(self.categories)
        else:
            out["min"], out["max"] = self.min, self.max
        return out


def parse_columns(spec: dict[str, dict[str, Any]]) -> dict[str, Column]:
    """Build Column objects from the ``prepare.columns`` params, rejecting a bad declaration."""
    columns = {}
    for name, decl in spec.items():
        kind = decl.get("type")
        if kind == "category":
            cats = tuple(str(c) for c in decl.get("categories") or ())
            if not cats:
                raise StageError(f"params: column '{name}' is a category with no categories")
            columns[name] = Column(name, kind, bool(decl.get("nullable", True)), categories=cats)
        elif kind == "number":
            lo, hi = decl.get("min"), decl.get("max")
            if lo is None or hi is None or float(lo) >= float(hi):
                raise StageError(f"params: column '{name}' needs numeric min < max")
            columns[name] = Column(
                name, kind, bool(decl.get("nullable", True)), min=float(lo), max=float(hi)
            )
        else:
            raise StageError(f"params: column '{name}' has type {kind!r}; use number or category")
    return columns


def _lines(index: pd.Index) -> str:
    """CSV line numbers of frame rows (0-based index, header on line 1), shortened."""
    lines = [str(int(i) + 2) for i in index[:MAX_LISTED]]
    more = f" and {len(index) - MAX_LISTED} more" if len(index) > MAX_LISTED else ""
    return ", ".join(lines) + more


def check_structure(raw: pd.DataFrame, columns: dict[str, Column]) -> pd.DataFrame:
    """Check the table has rows, every declared column, and values of the declared types.

    ``raw`` holds strings (missing values as NA). Returns the declared columns with numbers
    parsed. Any violation raises StageError naming the columns and the rows.
    """
    missing = [name for name in columns if name not in raw.columns]
    if missing:
        raise StageError(f"raw table is missing column(s): {', '.join(missing)}")
    if raw.empty:
        raise StageError("raw table has no rows")
    typed = pd.DataFrame(index=raw.index)
    for name, col in columns.items():
        values = raw[name]
        if col.type == "number":
            parsed = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & parsed.isna()
            if bad.any():
                sample = ", ".join(repr(v) for v in values[bad].unique()[:3])
                raise StageError(
                    f"column '{name}' must be numeric; found {sample} on line(s) "
                    f"{_lines(values.index[bad])}"
                )
            typed[name] = parsed.astype("float64")
        else:
            typed[name] = values.astype("string").astype(object).where(values.notna(), None)
    return typed


def invalid_feature_rows(frame: pd.DataFrame, columns: dict[str, Column]) -> dict[str, pd.Index]:
    """Per column, the rows whose value is outside the declared domain, range or nullability."""
    problems: dict[str, pd.Index] = {}
    for name, col in columns.items():
        values = frame[name]
        present = values.notna()
        if col.type == "number":
            bad = present & ~values.between(col.min, col.max)
        else:
            bad = present & ~values.isin(col.categories)
        if not col.nullable:
            bad |= ~present
        if bad.any():
            problems[name] = frame.index[bad]
    return problems


def validate(
    raw: pd.DataFrame,
    columns: dict[str, Column],
    target: str,
    features: list[str],
    max_missing_features: int,
    invalid_rows: str,
) -> pd.DataFrame:
    """Apply the schema and the row rules; return the clean table of features and target."""
    if target not in columns:
        raise StageError(f"params: target '{target}' is not a declared column")
    undeclared = [f for f in features if f not in columns]
    if undeclared:
        raise StageError(f"params: feature(s) not declared in columns: {', '.join(undeclared)}")
    if invalid_rows not in ("drop", "fail"):
        raise StageError(f"params: invalid_rows is {invalid_rows!r}; use drop or fail")

    used = {name: columns[name] for name in [*features, target]}
    frame = check_structure(raw, used)

    target_bad = invalid_feature_rows(frame, {target: used[target]}).get(target)
    if target_bad is not None:
        found = sorted({str(v) for v in frame.loc[target_bad, target]})
        raise StageError(
            f"target '{target}' has value(s) {found} outside {list(used[target].categories)} "
            f"on line(s) {_lines(target_bad)}"
        )

    n_missing = frame[features].isna().sum(axis=1)
    sparse = frame.index[n_missing > max_missing_features]
    if len(sparse):
        log.info(
            "dropping %d row(s) missing more than %d feature values: line(s) %s",
            len(sparse),
            max_missing_features,
            _lines(sparse),
        )
        frame = frame.drop(index=sparse)

    problems = invalid_feature_rows(frame, {f: used[f] for f in features})
    for name, rows in problems.items():
        message = f"column '{name}' is out of its declared domain on line(s) {_lines(rows)}"
        if invalid_rows == "fail":
            raise StageError(message)
        log.warning("dropping: %s", message)
    if problems:
        bad = pd.Index(sorted(set().union(*problems.values())))
        frame = frame.drop(index=bad)
    if frame.empty:
        raise StageError("no valid rows left after applying the row rules")
    return frame[[*features, target]]
