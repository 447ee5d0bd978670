"""Serving configuration (serving.yaml): the variants to load and the strategy that routes.

Deploy-side, not pipeline params. Each variant names a git rev (tag, branch, commit or GTO
name); every one is resolved, fetched and md5-verified by the same resolver as a single model.
A file that does not make sense refuses start-up with one line naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ServingError(Exception):
    """serving.yaml is missing, malformed or inconsistent; the message names the field."""


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rev: str = Field(min_length=1)
    weight: float | None = Field(None, ge=0)
    role: Literal["primary", "shadow"] | None = None


class Bandit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["thompson", "epsilon_greedy"] = "thompson"
    epsilon: float = Field(0.1, ge=0, le=1)
    seed: int = 0
    # how often each worker writes who answered what and reads the totals back
    flush_ms: float = Field(50.0, gt=0, le=60000)


class Lookup(BaseModel):
    """Static serving: a table of precomputed answers (make score's parquet, DVC-tracked)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)  # as DVC tracks it: a parquet file or a folder of parts
    key: str = Field(min_length=1)  # the column GET /predictions/{key} looks up
    # the rev that pins the table; by default the primary variant's (after LOCKSERVE_REV)
    rev: str | None = Field(None, min_length=1)


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["single", "shadow", "canary", "bandit"] = "single"
    variants: dict[str, Variant] = Field(min_length=1)
    bandit: Bandit | None = None
    lookup: Lookup | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServingConfig:
        names = list(self.variants)
        if self.strategy == "single" and len(names) != 1:
            raise ValueError(f"variants: single takes exactly one variant, got {len(names)}")
        if self.strategy in ("canary", "bandit", "shadow") and len(names) < 2:
            raise ValueError(f"variants: {self.strategy} needs at least two variants")
        if self.strategy == "canary":
            missing = [n for n, v in self.variants.items() if v.weight is None]
            if missing:
                raise ValueError(f"variants.{missing[0]}.weight: canary needs a weight per variant")
            if sum(v.weight or 0 for v in self.variants.values()) <= 0:
                raise ValueError("variants: canary weights must not all be zero")
        if self.strategy == "shadow":
            roles = [v.role for v in self.variants.values()]
            if roles.count("primary") != 1 or roles.count("shadow") != len(names) - 1:
                raise ValueError(
                    "variants: shadow needs one variant with role: primary, the rest role: shadow"
                )
        if self.strategy != "bandit" and self.bandit is not None:
            raise ValueError(f"bandit: only for strategy bandit, not {self.strategy}")
        return self


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a mapping with the same key twice (a duplicate variant)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ServingError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse(text: str, source: str = "serving.yaml") -> ServingConfig:
    """Validate serving.yaml's text; ServingError names the file and the field."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ServingError as exc:
        raise ServingError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "parse error"
        raise ServingError(f"{source}: not valid YAML{where}: {problem}") from None
    try:
        return ServingConfig.model_validate(doc if doc is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if message.startswith(field.split(".")[0] + ":") or message.startswith("variants"):
            raise ServingError(f"{source}: {message}") from None
        raise ServingError(f"{source}: {field}: {message}") from None


def load(path: Path) -> ServingConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ServingError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, str(path))
