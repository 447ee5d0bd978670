"""The compiled half of the artifact: the estimator as ONNX, and preprocessing as plain data.

The service computes model inputs from ``preprocess.json`` with numpy (contract.features) and
runs the estimator in onnxruntime, so it never needs to unpickle sklearn. ``parity`` proves the
graph against sklearn through that same reader, in train before anything is written and in
evaluate on the test split.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from contract.artifact import OUTPUTS
from contract.features import FeatureBuilder
from contract.labels import labels
from contract.schema import Schema
from src.stage import StageError

log = logging.getLogger("lockserve.pipeline")

MISSING_SHARE = 0.05


def preprocess_spec(transformer: ColumnTransformer) -> dict[str, Any]:
    """Fill values and categories of the fitted transformer, in its output column order."""
    parts = transformer.named_transformers_
    numeric, categorical = [], []
    if "numeric" in parts:
        imputer = parts["numeric"]
        numeric = [
            {"name": str(name), "fill": float(fill)}
            for name, fill in zip(imputer.feature_names_in_, imputer.statistics_, strict=True)
        ]
    if "categorical" in parts:
        imputer = parts["categorical"].named_steps["impute"]
        onehot = parts["categorical"].named_steps["onehot"]
        categorical = [
            {"name": str(name), "fill": str(fill), "categories": [str(c) for c in cats]}
            for name, fill, cats in zip(
                imputer.feature_names_in_, imputer.statistics_, onehot.categories_, strict=True
            )
        ]
    return {
        "inputs": [str(n) for n in transformer.get_feature_names_out()],
        "numeric": numeric,
        "categorical": categorical,
    }


def float32_thresholds(estimator: Any) -> Any:
    """A copy of a histogram gradient boosting model whose split thresholds are the largest
    float32 at or below the fitted ones.

    The pipeline feeds every estimator float32 model inputs; for a float32 x, ``x <= t`` and
    ``x <= floor32(t)`` decide alike, and floor32(t) survives the graph's float32 thresholds
    exactly, where rounding t to the nearest float32 can send x = round32(t) the other way.
    (skl2onnx makes this adjustment itself for sklearn's other trees.)
    """
    if not hasattr(estimator, "_predictors"):
        return estimator
    adjusted = copy.deepcopy(estimator)
    for predictors in adjusted._predictors:
        for predictor in predictors:
            t = predictor.nodes["num_threshold"]
            t32 = t.astype(np.float32)
            down = np.nextafter(t32, np.float32(-np.inf))
            predictor.nodes["num_threshold"] = np.where(t32 > t, down, t32).astype(np.float64)
    return adjusted


def without_bootstrap_record(estimator: Any) -> Any:
    """A forest as the converter needs it: a shallow copy without the training set's size.

    skl2onnx's option handling reads every public fitted attribute, and a forest's
    ``estimators_samples_`` redraws each tree's bootstrap sample from that size on every read
    (seconds per export at a million rows). The graph needs neither; the bytes are the same.
    """
    if not hasattr(estimator, "_n_samples") or not hasattr(estimator, "estimators_"):
        return estimator
    view = copy.copy(estimator)
    del view._n_samples
    return view


def export(estimator: Any, n_inputs: int, task: str) -> bytes | None:
    """The fitted estimator as ONNX bytes (float32 inputs, OUTPUTS[task] out), or None."""
    estimator = without_bootstrap_record(float32_thresholds(estimator))
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    options = {id(final): {"zipmap": False}} if task == "classification" else None
    try:
        from skl2onnx import to_onnx

        model = to_onnx(estimator, np.zeros((1, n_inputs), np.float32), options=options)
        outputs = [o.name for o in model.graph.output]
        if OUTPUTS[task] not in outputs:
            raise ValueError(f"graph outputs {outputs} lack {OUTPUTS[task]!r}")
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many kinds for unsupported models
        message = " ".join(str(exc).split())[:300]
        log.warning(
            "no ONNX export (%s: %s); the artifact serves with sklearn only",
            type(exc).__name__,
            message,
        )
        return None
    return model.SerializeToString()


def sample_rows(
    schema: Schema, n: int, seed: int, pool: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``n`` random rows inside the schema: each number drawn from the values the column
    takes in ``pool`` (real values, as clients send them) or, without one, uniform in its range
    at float32 precision; any category; some values missing where nullable."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for f in schema.features:
        if f.type == "number":
            seen = pool[f.name].dropna().to_numpy(np.float64) if pool is not None else None
            if seen is not None and len(seen):
                values = rng.choice(seen, n)
            else:
                values = rng.uniform(f.min, f.max, n).astype(np.float32).astype(np.float64)
            if f.nullable:
                values[rng.random(n) < MISSING_SHARE] = np.nan
        else:
            values = rng.choice(np.asarray(f.categories, dtype=object), n)
            if f.nullable:
                values[rng.random(n) < MISSING_SHARE] = np.nan
        columns[f.name] = values
    return pd.DataFrame(columns)


def sklearn_output(model: Any, task: str, frame: pd.DataFrame) -> np.ndarray:
    """What sklearn answers: class probabilities, or values."""
    if task == "classification":
        return model.predict_proba(frame)
    return np.asarray(model.predict(frame), dtype=np.float64)


def onnx_output(session: Any, task: str, inputs: np.ndarray) -> np.ndarray:
    """What the graph answers for float32 model inputs: probabilities, or values."""
    out = session.run([OUTPUTS[task]], {session.get_inputs()[0].name: inputs})[0]
    return out if task == "classification" else out.reshape(-1)


def session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def parity(
    model: Any,
    onnx_bytes: bytes,
    spec: dict[str, Any],
    schema: Schema,
    rows: pd.DataFrame,
    limit: float,
    known: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare the ONNX path (spec features + onnxruntime) with sklearn on ``rows``.

    Classification: the largest probability difference must stay within ``limit`` and every
    label must agree; regression: the largest absolute difference within ``limit``. Otherwise
    StageError, so a conversion bug can never ship. Returns the figures. ``known``: sklearn's
    answers (sklearn_output) for the first rows, when the caller has them already.
    """
    inputs = FeatureBuilder(spec, schema.names).columns(
        {name: rows[name].to_numpy() for name in schema.names}
    )
    ours = onnx_output(session(onnx_bytes), schema.task, inputs).astype(np.float64)
    if known is None:
        theirs = sklearn_output(model, schema.task, rows[schema.names])
    elif len(known) < len(rows):
        rest = sklearn_output(model, schema.task, rows[schema.names].iloc[len(known) :])
        theirs = np.concatenate([known, rest])
    else:
        theirs = known
    diff = float(np.abs(ours - theirs).max()) if len(rows) else 0.0
    figures: dict[str, Any] = {"rows": len(rows), "max_abs_diff": float(f"{diff:.3g}")}
    agree = 1.0
    if schema.task == "classification":
        agree = float((labels(ours) == labels(theirs)).mean()) if len(rows) else 1.0
        figures["label_agreement"] = agree
    log.info(
        "ONNX parity on %d rows: max |onnx - sklearn| = %.3g (limit %.3g)%s",
        len(rows),
        diff,
        limit,
        f", labels agree {agree:.4f}" if schema.task == "classification" else "",
    )
    if diff > limit or agree < 1.0:
        raise StageError(
            f"ONNX export disagrees with sklearn on {len(rows)} rows: max difference "
            f"{diff:.3g} (limit {limit:.3g}), label agreement {agree:.4f}"
        )
    return figures
