"""The rules of `make retrain`'s promotion gate, as pure functions (no files, git or DVC).

Owns which way each metric of ``reports/metrics.json`` improves, the ``retrain`` section of
params.yaml (the GTO stage, the version bump, and per task how much each metric may get worse:
``max_drop``), the verdict on a new model's metrics against those of the model the stage
holds, and the next version's name. Anything malformed raises GateError with one line naming
the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HIGHER, LOWER = "higher", "lower"

# Which way each metric src/scores.py and src/evaluate.py write gets better, and which task
# writes it (the onnx_* ones only when the artifact carries a graph). n_test counts rows: it is
# no quality, and no threshold may name it.
DIRECTIONS: dict[str, str] = {
    "accuracy": HIGHER,
    "balanced_accuracy": HIGHER,
    "f1_macro": HIGHER,
    "roc_auc": HIGHER,
    "log_loss": LOWER,
    "rmse": LOWER,
    "mae": LOWER,
    "r2": HIGHER,
    "onnx_label_agreement": HIGHER,
    "onnx_max_abs_diff": LOWER,
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "roc_auc",
        "log_loss",
        "onnx_label_agreement",
        "onnx_max_abs_diff",
    ),
    "regression": ("rmse", "mae", "r2", "onnx_max_abs_diff"),
}
TASKS = tuple(TASK_METRICS)
BUMPS = ("major", "minor", "patch")
FIRST_VERSION = "v1.0.0"
DEFAULT_STAGE = "prod"
DEFAULT_BUMP = "minor"
KEYS = {"stage", "bump", "max_drop"}
EPSILON = 1e-9  # float noise: a drop equal to its allowance passes

# A GTO stage name that GTO accepts and the service's `name#stage` revs resolve.
STAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?")
PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)(?:[-+].*)?")


class GateError(ValueError):
    """The retrain params or the metrics cannot be judged; the message names what and where."""


@dataclass(frozen=True)
class Threshold:
    """How much one metric may get worse: ``amount`` in the metric's own units, or, when
    ``relative``, as a fraction of the stage's value."""

    metric: str
    amount: float
    relative: bool = False

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.metric]

    def allowed(self, old: float) -> float:
        """The largest worsening allowed against the stage's value ``old`` (never negative)."""
        return self.amount * abs(old) if self.relative else self.amount

    def __str__(self) -> str:
        return f"{self.amount * 100:g}%" if self.relative else f"{self.amount:g}"


@dataclass(frozen=True)
class Settings:
    """The ``retrain`` params for one task."""

    stage: str
    bump: str
    thresholds: tuple[Threshold, ...]


def parse_threshold(task: str, metric: Any, value: Any) -> Threshold:
    """One ``max_drop.<task>`` entry: a number >= 0 (absolute) or a string ``"N%"`` (relative
    to the stage's value)."""
    key = f"retrain.max_drop.{task}"
    if not isinstance(metric, str) or metric not in TASK_METRICS[task]:
        known = ", ".join(TASK_METRICS[task])
        raise GateError(f"{key}: {metric!r} is not a {task} metric (those are: {known})")
    where = f"{key}.{metric}"
    if isinstance(value, str):
        match = PERCENT.fullmatch(value)
        if not match:
            raise GateError(f"{where}: {value!r} is neither a number nor a percentage like '5%'")
        return Threshold(metric, float(match[1]) / 100, relative=True)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateError(f"{where}: {value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise GateError(f"{where}: {value!r} must be a finite number >= 0")
    return Threshold(metric, float(value))


def settings(section: Any, task: str, stage: str | None = None) -> Settings:
    """params.yaml's ``retrain`` section for ``task``; ``stage`` overrides ``retrain.stage``."""
    if section is None:
        raise GateError("params.yaml has no retrain section (retrain.max_drop sets the gate)")
    if not isinstance(section, Mapping):
        raise GateError("params.yaml: retrain must be a mapping")
    unknown = sorted(str(k) for k in set(section) - KEYS)
    if unknown:
        raise GateError(f"retrain: unknown key(s) {unknown} (known: {', '.join(sorted(KEYS))})")
    chosen = stage if stage is not None else section.get("stage", DEFAULT_STAGE)
    if not isinstance(chosen, str) or not STAGE_NAME.fullmatch(chosen):
        raise GateError(
            f"retrain.stage: {chosen!r} is not a GTO stage name "
            "(letters, digits, '-' and '_', starting and ending with a letter or digit)"
        )
    bump = section.get("bump", DEFAULT_BUMP)
    if bump not in BUMPS:
        raise GateError(f"retrain.bump: {bump!r} is not one of {', '.join(BUMPS)}")
    if task not in TASKS:
        raise GateError(f"prepare.task: {task!r} is not one of {', '.join(TASKS)}")
    drops = section.get("max_drop")
    if not isinstance(drops, Mapping):
        raise GateError("retrain.max_drop must map each task to its metrics' allowed drops")
    strange = sorted(str(k) for k in set(drops) - set(TASKS))
    if strange:
        raise GateError(f"retrain.max_drop: unknown task(s) {strange} (known: {', '.join(TASKS)})")
    per_task = drops.get(task)
    if not isinstance(per_task, Mapping) or not per_task:
        raise GateError(
            f"retrain.max_drop.{task} names no metric: the gate would let any model through"
        )
    thresholds = tuple(parse_threshold(task, m, v) for m, v in per_task.items())
    return Settings(chosen, bump, thresholds)


def _number(value: Any) -> float | None:
    """A metric's value as a float, or None when the split left it undefined (null)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateError(f"metric value {value!r} is not a number")
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value: float) -> str:
    """A metric or a difference, short: three decimals, or three significant digits when
    that would show nothing."""
    if value == 0 or 0.001 <= abs(value) < 1e6:
        return f"{value:.3f}"
    return f"{value:.3g}"


def signed(value: float) -> str:
    """``+0.012`` or ``−0.012`` (a minus sign, not a hyphen)."""
    text = fmt(abs(value))
    return f"−{text}" if value < 0 and text.strip("0.") else f"+{text}"


@dataclass(frozen=True)
class Comparison:
    """One metric of the new model against the stage's."""

    threshold: Threshold
    new: float | None
    old: float | None

    @property
    def metric(self) -> str:
        return self.threshold.metric

    @property
    def compared(self) -> bool:
        """Both sides defined: the threshold decides."""
        return self.new is not None and self.old is not None

    @property
    def worsening(self) -> float:
        """How much worse the new value is (negative: better), in the metric's units."""
        assert self.new is not None and self.old is not None
        diff = self.new - self.old
        return -diff if self.threshold.direction == HIGHER else diff

    @property
    def allowed(self) -> float:
        assert self.old is not None
        return self.threshold.allowed(self.old)

    @property
    def passed(self) -> bool:
        if self.old is None:  # nothing to beat: the stage's model had no such value
            return True
        if self.new is None:  # undefined now, defined before
            return False
        return self.worsening <= self.allowed + EPSILON

    def describe(self) -> str:
        """``balanced_accuracy 0.912 → 0.701 (−0.211, allowed −0.010)``."""
        if self.old is None:
            shown = "undefined" if self.new is None else fmt(self.new)
            return f"{self.metric} {shown} (nothing to compare with)"
        if self.new is None:
            return f"{self.metric} {fmt(self.old)} → undefined (the new split leaves it null)"
        sign = -1.0 if self.threshold.direction == HIGHER else 1.0
        relative = f" = {self.threshold}" if self.threshold.relative else ""
        return (
            f"{self.metric} {fmt(self.old)} → {fmt(self.new)} ({signed(self.new - self.old)}, "
            f"allowed {signed(sign * self.allowed)}{relative})"
        )


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: every comparison, and whether there was anything to beat."""

    comparisons: tuple[Comparison, ...]
    first: bool  # no model holds the stage yet: nothing to beat

    @property
    def passed(self) -> bool:
        return self.first or all(c.passed for c in self.comparisons)

    @property
    def refused(self) -> tuple[Comparison, ...]:
        return () if self.first else tuple(c for c in self.comparisons if not c.passed)

    def reason(self) -> str:
        """The refused comparisons, in one line."""
        return "; ".join(c.describe() for c in self.refused)


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as one level, keys joined with dots (``reports/metrics.json`` is flat)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def judge(
    new: Mapping[str, Any], old: Mapping[str, Any] | None, thresholds: tuple[Threshold, ...]
) -> Verdict:
    """The new metrics against the stage's (``old``; None when no model holds the stage).

    A threshold naming a metric the new metrics lack is an error (GateError), not a refusal:
    the params do not fit the task. A metric the stage's model lacks is not compared."""
    if not thresholds:
        raise GateError("the gate names no metric")
    missing = [t.metric for t in thresholds if t.metric not in new]
    if missing:
        has = ", ".join(sorted(k for k in new if k in DIRECTIONS)) or "none"
        raise GateError(
            f"retrain.max_drop names {', '.join(missing)}, which the new metrics lack "
            f"(they have {has})"
        )
    comparisons = tuple(
        Comparison(
            t,
            _number(new[t.metric]),
            None if old is None else _number(old.get(t.metric)),
        )
        for t in thresholds
    )
    return Verdict(comparisons, first=old is None)


def next_version(latest: str | None, bump: str) -> str:
    """The version after ``latest`` (``v1.2.3``), bumped by ``bump``; v1.0.0 when none."""
    if bump not in BUMPS:
        raise GateError(f"bump {bump!r} is not one of {', '.join(BUMPS)}")
    if latest is None:
        return FIRST_VERSION
    match = VERSION.fullmatch(latest)
    if not match:
        raise GateError(f"latest version {latest!r} is not a semantic version like v1.2.3")
    major, minor, patch = (int(part) for part in match.groups())
    if bump == "major":
        return f"v{major + 1}.0.0"
    if bump == "minor":
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"
