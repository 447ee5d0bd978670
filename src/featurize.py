"""Stage featurize: fit the preprocessing on the training split and transform both splits.

Reads data/prepared/ and the ``featurize`` params; writes the transformed training split
(parquet) and the fitted transformer (data/features/). Numbers are imputed; categories are
imputed, then one-hot encoded (unknown categories ignored). Trees need no scaling, so none is
done here: an estimator that needs it scales inside the train stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from contract.schema import Schema
from src.stage import (
    StageError,
    canonical_pickle,
    load_params,
    main_wrapper,
    parquet_bytes,
    read_schema,
    write_outputs,
)
from src.tables import categorical_as_object

log = logging.getLogger("lockserve.pipeline")

PREPARED = Path("data/prepared")
OUT = Path("data/features")
MISSING = "missing"
KEYS = {"numeric_imputer", "categorical_imputer"}


def build_transformer(schema: Schema, params: dict[str, Any]) -> ColumnTransformer:
    """Imputation for numbers; imputation then one-hot (unknown categories ignored) otherwise."""
    unknown = set(params) - KEYS
    if unknown:
        raise StageError(f"params: featurize has unknown key(s) {sorted(unknown)}")
    numeric = [f.name for f in schema.features if f.type == "number"]
    categorical = [f.name for f in schema.features if f.type == "category"]
    num_strategy = params.get("numeric_imputer")
    if num_strategy not in ("median", "mean"):
        raise StageError(f"params: numeric_imputer is {num_strategy!r}; use median or mean")
    cat_strategy = params.get("categorical_imputer")
    if cat_strategy == "constant":
        cat_imputer = SimpleImputer(strategy="constant", fill_value=MISSING)
    elif cat_strategy == "most_frequent":
        cat_imputer = SimpleImputer(strategy="most_frequent")
    else:
        raise StageError(
            f"params: categorical_imputer is {cat_strategy!r}; use constant or most_frequent"
        )
    parts = []
    if numeric:
        parts.append(("numeric", SimpleImputer(strategy=num_strategy), numeric))
    if categorical:
        steps = Pipeline(
            [
                ("impute", cat_imputer),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        parts.append(("categorical", steps, categorical))
    return ColumnTransformer(parts, verbose_feature_names_out=False)


def check_input_names(transformer: ColumnTransformer, target: str) -> None:
    """Refuse two model inputs of one name, or one named like the target: column 'a_b' and
    column 'a' with category 'b' would both make input 'a_b'."""
    parts = transformer.named_transformers_
    made: list[tuple[str, str]] = []
    if "numeric" in parts:
        made += [(str(n), f"column '{n}'") for n in parts["numeric"].feature_names_in_]
    if "categorical" in parts:
        steps = parts["categorical"].named_steps
        for name, cats in zip(
            steps["impute"].feature_names_in_, steps["onehot"].categories_, strict=True
        ):
            made += [(f"{name}_{c}", f"column '{name}' category '{c}'") for c in cats]
    taken = {target: f"the target '{target}'"}
    for name, origin in made:
        if name in taken:
            raise StageError(
                f"model input name '{name}' is made by both {taken[name]} and {origin}: "
                "rename a column or drop it from features"
            )
        taken[name] = origin


def transform(
    transformer: ColumnTransformer,
    frame: pd.DataFrame,
    target: str,
    transformed: np.ndarray | None = None,
) -> pd.DataFrame:
    """Transformed features as a frame with named columns, the target last. ``transformed``:
    the transformer's output for ``frame`` when the caller has it already (fit_transform)."""
    if transformed is None:
        transformed = transformer.transform(frame)
    features = pd.DataFrame(transformed, columns=transformer.get_feature_names_out()).astype(
        "float64"
    )
    features[target] = frame[target].to_numpy()
    return features


def run(params: dict[str, Any], prepared: Path = PREPARED, out_dir: Path = OUT) -> None:
    """Fit on prepared/train.parquet; write features/train.parquet and transformer.pkl."""
    schema = read_schema(prepared / "schema.json")
    categorical = [f.name for f in schema.features if f.type == "category"]
    train = categorical_as_object(pd.read_parquet(prepared / "train.parquet"), categorical)
    log.info("read %s: %d train rows", prepared, len(train))
    transformer = build_transformer(schema, params)
    fitted = transformer.fit_transform(train[schema.names])  # one pass: fit, then its output
    check_input_names(transformer, schema.target)
    train_x = transform(transformer, train, schema.target, fitted)
    log.info("%d raw features -> %d model inputs", len(schema.names), train_x.shape[1] - 1)
    write_outputs(
        {
            out_dir / "train.parquet": parquet_bytes(train_x),
            out_dir / "transformer.pkl": canonical_pickle(transformer),
        }
    )


if __name__ == "__main__":
    main_wrapper("featurize", lambda: run(load_params("featurize")))
