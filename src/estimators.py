"""The estimators train can fit, by task and by the name params.yaml gives them.

Each is seeded and uses the cores ``n_jobs`` allows where it can; results do not depend on the
number of jobs. A linear model gets a scaler in front; trees need none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from src.stage import StageError


def _scaled(model: Any) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("model", model)])


# name -> (task -> factory(seed, n_jobs, hyper-parameters))
ESTIMATORS: dict[str, dict[str, Callable[[int, int, dict[str, Any]], Any]]] = {
    "random_forest": {
        "classification": lambda s, j, h: RandomForestClassifier(random_state=s, n_jobs=j, **h),
        "regression": lambda s, j, h: RandomForestRegressor(random_state=s, n_jobs=j, **h),
    },
    "hist_gradient_boosting": {
        "classification": lambda s, j, h: HistGradientBoostingClassifier(random_state=s, **h),
        "regression": lambda s, j, h: HistGradientBoostingRegressor(random_state=s, **h),
    },
    "gradient_boosting": {
        "classification": lambda s, j, h: GradientBoostingClassifier(random_state=s, **h),
        "regression": lambda s, j, h: GradientBoostingRegressor(random_state=s, **h),
    },
    "logistic_regression": {
        "classification": lambda s, j, h: _scaled(LogisticRegression(random_state=s, **h)),
    },
    "ridge": {
        "regression": lambda s, j, h: _scaled(Ridge(random_state=s, **h)),
    },
}


def names(task: str) -> list[str]:
    """The estimators that fit ``task``."""
    return [name for name, tasks in ESTIMATORS.items() if task in tasks]


def build(params: dict[str, Any], task: str) -> Any:
    """The estimator ``params['estimator']`` names for ``task``, with its hyper-parameters."""
    name = params.get("estimator")
    if not isinstance(name, str) or name not in ESTIMATORS or task not in ESTIMATORS[name]:
        raise StageError(
            f"params: estimator {name!r} does not fit {task}; use one of {', '.join(names(task))}"
        )
    hyper = params.get(name) or {}
    if not isinstance(hyper, dict):
        raise StageError(f"params: train.{name} must map hyper-parameters to values")
    seed, n_jobs = params.get("seed"), params.get("n_jobs", -1)
    if not isinstance(seed, int) or not isinstance(n_jobs, int) or isinstance(n_jobs, bool):
        raise StageError("params: train.seed and train.n_jobs must be integers")
    try:
        estimator = ESTIMATORS[name][task](seed, n_jobs, dict(hyper))
        steps = estimator.steps if isinstance(estimator, Pipeline) else [("", estimator)]
        for _, step in steps:
            step._validate_params()  # sklearn's own check of every value, before fitting
    except (TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise StageError(f"params: bad hyper-parameter for {name}: {message}") from None
    return estimator
