"""Static serving: predictions computed ahead of time by batch scoring, looked up by key.

The table is what ``make score`` wrote (parquet, one file or a folder of parts), tracked by
DVC (``dvc add`` or a stage's out) and pinned like the model: serving.yaml's ``lookup`` names
its path, the key column and a rev, and the resolver returns its verified bytes at that rev.
Each answer names the md5 of the model that scored the row (the files' ``lockserve.md5``
metadata) and the md5 of the table that holds it.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

from api.logs import FIELDS
from api.resolver import ResolutionError, ResolvedData

log = logging.getLogger("lockserve.lookup")

ERROR = "error"
PROBA = "proba_"
MODEL_KEYS = ("md5", "rev", "artifact", "commit")


def _part_order(relpath: str) -> list[Any]:
    """part.10.parquet after part.9.parquet: numbers in a name compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", relpath)]


@dataclass(frozen=True)
class Table:
    """One verified table of answers, indexed by its key column."""

    resolved: ResolvedData
    key: str
    model: dict[str, str]  # the scoring model's md5, rev, artifact (and commit) from metadata
    task: str  # classification | regression
    index: dict[str, int]  # str(key) -> row
    keys: list[Any]
    labels: list[Any]
    probabilities: list[list[float]]  # classification: one list per row, classes' order
    classes: list[str]
    values: list[float | None]
    errors: list[str | None]

    @property
    def rows(self) -> int:
        return len(self.keys)

    def describe(self) -> dict[str, Any]:
        """What GET /predictions reports: which table, which model scored it, its size."""
        return {
            "table": self.ref,
            "key": self.key,
            "rows": self.rows,
            "refused_rows": sum(e is not None for e in self.errors),
            "task": self.task,
            "classes": self.classes if self.task == "classification" else None,
            "model": self.model,
        }

    @property
    def ref(self) -> dict[str, str]:
        r = self.resolved
        return {"path": r.path, "md5": r.md5, "rev": r.rev, "commit": r.commit}

    def find(self, key: str) -> int | None:
        return self.index.get(key)

    def answer(self, row: int) -> dict[str, Any]:
        """The stored answer of ``row``: its label and probabilities, its value, or its error."""
        out: dict[str, Any] = {"key": self.keys[row]}
        error = self.errors[row]
        if error is not None:
            out[ERROR] = error
        elif self.task == "classification":
            out["label"] = self.labels[row]
            out["probabilities"] = dict(zip(self.classes, self.probabilities[row], strict=True))
        else:
            out["value"] = self.values[row]
        return out


def load(resolved: ResolvedData, key: str) -> Table:
    """Read and index the verified parquet bytes; ResolutionError names what does not fit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = f"{resolved.path} (md5 {resolved.md5})"
    parts, models = [], set()
    names = sorted(
        (n for n in resolved.files if n == "" or n.endswith(".parquet")), key=_part_order
    )
    if not names:
        raise ResolutionError(f"{where} holds no .parquet file")
    for name in names:
        try:
            part = pq.read_table(io.BytesIO(resolved.files[name]))
        except (pa.ArrowException, OSError) as exc:
            raise ResolutionError(f"{where}/{name} is not parquet: {exc}") from None
        meta = {k.decode(): v.decode() for k, v in (part.schema.metadata or {}).items()}
        models.add(tuple(meta.get(f"lockserve.{k}", "") for k in MODEL_KEYS))
        parts.append(part.replace_schema_metadata(None))
    if len(models) != 1 or not next(iter(models))[0]:
        raise ResolutionError(
            f"{where} is not one scoring's output: its files name "
            f"{len(models)} model(s) in lockserve.md5 metadata (make score writes it)"
        )
    model = {k: v for k, v in zip(MODEL_KEYS, next(iter(models)), strict=True) if v}
    try:
        table = pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowException as exc:
        raise ResolutionError(f"{where}: its files do not share one schema: {exc}") from None
    columns = table.column_names
    if key not in columns:
        raise ResolutionError(f"{where} has no key column {key!r} (columns: {', '.join(columns)})")
    kind = table.schema.field(key).type
    if not (
        pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        raise ResolutionError(f"{where}: key column {key!r} holds {kind}, not integers or strings")
    if ERROR not in columns:
        raise ResolutionError(f"{where} has no {ERROR!r} column: not written by make score")
    keys = table.column(key).to_pylist()
    if None in keys:
        raise ResolutionError(f"{where}: key column {key!r} is empty in row {keys.index(None)}")
    index: dict[str, int] = {}
    for row, value in enumerate(keys):
        if index.setdefault(str(value), row) != row:
            raise ResolutionError(
                f"{where}: key {value!r} appears twice in column {key!r} "
                f"(rows {index[str(value)]} and {row})"
            )
    classes = [c.removeprefix(PROBA) for c in columns if c.startswith(PROBA)]
    if "label" in columns and classes:
        task = "classification"
        columns_of = (table.column(PROBA + c).to_pylist() for c in classes)
        probabilities = [list(row) for row in zip(*columns_of, strict=True)]
        labels, values = table.column("label").to_pylist(), []
    elif "value" in columns:
        task, labels, probabilities, values = (
            "regression",
            [],
            [],
            table.column("value").to_pylist(),
        )
    else:
        raise ResolutionError(f"{where} has neither label and proba_* columns nor value")
    loaded = Table(
        resolved,
        key,
        model,
        task,
        index,
        keys,
        labels,
        probabilities,
        classes,
        values,
        table.column(ERROR).to_pylist(),
    )
    log.info(
        "lookup table %s md5 %s: %d rows by %s, scored by model %s",
        resolved.path,
        resolved.md5,
        loaded.rows,
        key,
        model["md5"],
        extra={
            FIELDS: {
                "path": resolved.path,
                "md5": resolved.md5,
                "rows": loaded.rows,
                "model_md5": model["md5"],
                **{k: round(v, 1) for k, v in resolved.timings_ms.items()},
            }
        },
    )
    return loaded
