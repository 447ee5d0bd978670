"""The input schema an artifact carries (schema.json): task, target, classes and features.

A feature is a number in a plausible range or a category from a fixed domain, either of them
nullable. ``classes`` (classification only) keeps the labels' JSON type: strings, or integers
for integer-coded labels. ``max_missing_features`` is the row rule training applied.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any

TASKS = ("classification", "regression")
FEATURE_TYPES = ("number", "category")


class ContractError(ValueError):
    """Bytes or a document that do not follow the artifact contract; the message says how."""


def shown(value: Any) -> str:
    """A document's value for an error message: one short line, however deep or large it is."""
    try:
        return reprlib.repr(value)
    except ValueError:  # an int too long to write in decimal
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Feature:
    """One input column: a number in [min, max] or a category from ``categories``."""

    name: str
    type: str
    nullable: bool
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

    @classmethod
    def from_json(cls, doc: Any) -> Feature:
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
            raise ContractError(
                f"schema: a feature needs a non-empty string name, got {shown(doc)}"
            )
        name, kind = doc["name"], doc.get("type")
        nullable = doc.get("nullable", True)
        if not isinstance(nullable, bool):
            raise ContractError(f"schema: feature {name!r} nullable must be true or false")
        if kind == "category":
            cats = doc.get("categories")
            if (
                not isinstance(cats, list)
                or not cats
                or not all(isinstance(c, str) for c in cats)
                or len(set(cats)) != len(cats)
            ):
                raise ContractError(
                    f"schema: feature {name!r} needs a list of distinct string categories"
                )
            return cls(name, kind, nullable, categories=tuple(cats))
        if kind == "number":
            lo, hi = doc.get("min"), doc.get("max")
            if not all(_finite(v) for v in (lo, hi)) or not float(lo) < float(hi):
                raise ContractError(f"schema: feature {name!r} needs finite numbers min < max")
            return cls(name, kind, nullable, min=float(lo), max=float(hi))
        raise ContractError(
            f"schema: feature {name!r} has type {shown(kind)}; not one of number, category"
        )


def _finite(value: Any) -> bool:
    """A JSON number a float holds: not a bool, NaN, an infinity or an int past float range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _unicode(text: str) -> bool:
    """Text UTF-8 can encode: JSON's \\u escapes can spell a lone surrogate, which it cannot."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Schema:
    """What a model takes and answers."""

    task: str
    target: str
    features: tuple[Feature, ...]
    classes: tuple[str | int, ...] = ()
    max_missing_features: int | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "target": self.target,
            "features": [f.to_json() for f in self.features],
        }
        if self.task == "classification":
            out["classes"] = list(self.classes)
        if self.max_missing_features is not None:
            out["max_missing_features"] = self.max_missing_features
        return out

    @classmethod
    def from_json(cls, doc: Any) -> Schema:
        """Parse and check a schema document; any inconsistency raises ContractError."""
        if not isinstance(doc, dict):
            raise ContractError("schema: not a JSON object")
        task, target = doc.get("task"), doc.get("target")
        if task not in TASKS:
            raise ContractError(f"schema: task {shown(task)} is not one of {', '.join(TASKS)}")
        if not isinstance(target, str) or not target:
            raise ContractError("schema: target must be a non-empty string")
        raw = doc.get("features")
        if not isinstance(raw, list) or not raw:
            raise ContractError("schema: features must be a non-empty list")
        features = tuple(Feature.from_json(f) for f in raw)
        names = [f.name for f in features]
        if len(set(names)) != len(names) or target in names:
            raise ContractError("schema: feature names must be distinct and not the target")
        classes: tuple[str | int, ...] = ()
        if task == "classification":
            listed = doc.get("classes")
            if (
                not isinstance(listed, list)
                or len(listed) < 2
                or not (
                    all(isinstance(c, str) for c in listed)
                    or all(isinstance(c, int) and not isinstance(c, bool) for c in listed)
                )
                or len(set(listed)) != len(listed)
            ):
                raise ContractError(
                    "schema: classification needs at least two distinct classes, "
                    "all strings or all integers"
                )
            classes = tuple(listed)
        texts = [target, *names, *(c for f in features for c in f.categories), *classes]
        if not all(_unicode(t) for t in texts if isinstance(t, str)):
            raise ContractError(
                "schema: a name, category or class is not Unicode text (a lone surrogate)"
            )
        rule = doc.get("max_missing_features")
        if rule is not None and (not isinstance(rule, int) or isinstance(rule, bool) or rule < 0):
            raise ContractError("schema: max_missing_features must be a non-negative integer")
        return cls(task, target, features, classes, rule)
