"""Stage featurize: fit the preprocessing on the training split and transform both splits.

Reads data/prepared/ and the ``featurize`` params; writes the transformed features
(parquet) and the fitted transformer (data/features/). Trees need no scaling, so none is
done here: an estimator that needs it scales inside the train stage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from src.stage import (
    StageError,
    canonical_pickle,
    load_params,
    main_wrapper,
    parquet_bytes,
    write_outputs,
)

log = logging.getLogger("lockserve.pipeline")

PREPARED = Path("data/prepared")
OUT = Path("data/features")
MISSING = "missing"


def build_transformer(schema: dict[str, Any], params: dict[str, Any]) -> ColumnTransformer:
    """Imputation for numbers; imputation then one-hot (unknown categories ignored) otherwise."""
    numeric = [f["name"] for f in schema["features"] if f["type"] == "number"]
    categorical = [f["name"] for f in schema["features"] if f["type"] == "category"]
    num_strategy = params["numeric_imputer"]
    if num_strategy not in ("median", "mean"):
        raise StageError(f"params: numeric_imputer is {num_strategy!r}; use median or mean")
    cat_strategy = params["categorical_imputer"]
    if cat_strategy == "constant":
        cat_imputer = SimpleImputer(strategy="constant", fill_value=MISSING)
    elif cat_strategy == "most_frequent":
        cat_imputer = SimpleImputer(strategy="most_frequent")
    else:
        raise StageError(
            f"params: categorical_imputer is {cat_strategy!r}; use constant or most_frequent"
        )
    categorical_steps = Pipeline(
        [
            ("impute", cat_imputer),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy=num_strategy), numeric),
            ("categorical", categorical_steps, categorical),
        ],
        verbose_feature_names_out=False,
    )


def transform(transformer: ColumnTransformer, frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Transformed features as a frame with named columns, the target last."""
    features = pd.DataFrame(
        transformer.transform(frame), columns=transformer.get_feature_names_out()
    ).astype("float64")
    features[target] = frame[target].to_numpy()
    return features


def categorical_as_object(frame: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Category columns as plain objects with NaN for missing, as the model receives them."""
    out = frame.copy()
    for f in schema["features"]:
        if f["type"] == "category":
            col = out[f["name"]]
            out[f["name"]] = col.astype(object).where(col.notna(), np.nan)
    return out


def run(params: dict[str, Any], prepared: Path = PREPARED, out_dir: Path = OUT) -> None:
    """Fit on prepared/train.parquet; write features/{train,test}.parquet and transformer.pkl."""
    schema = json.loads((prepared / "schema.json").read_text())
    train = categorical_as_object(pd.read_parquet(prepared / "train.parquet"), schema)
    test = categorical_as_object(pd.read_parquet(prepared / "test.parquet"), schema)
    log.info("read %s: %d train rows, %d test rows", prepared, len(train), len(test))
    names = [f["name"] for f in schema["features"]]
    transformer = build_transformer(schema, params).fit(train[names])
    target = schema["target"]
    train_x, test_x = transform(transformer, train, target), transform(transformer, test, target)
    log.info("%d raw features -> %d model inputs", len(names), train_x.shape[1] - 1)
    write_outputs(
        {
            out_dir / "train.parquet": parquet_bytes(train_x),
            out_dir / "test.parquet": parquet_bytes(test_x),
            out_dir / "transformer.pkl": canonical_pickle(transformer),
        }
    )


if __name__ == "__main__":
    main_wrapper("featurize", lambda: run(load_params("featurize")))
