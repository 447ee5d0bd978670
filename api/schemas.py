"""Request and response models generated from the artifact's input schema.

The same models validate /predict and describe it in the OpenAPI docs, so /docs shows the real
feature names, types, ranges and allowed categories. Fields are named ``f0``, ``f1``, ... in
schema order with the column's own name as alias, so any column name works (spaces, non-ASCII
letters, names pydantic reserves) and an instance's values come out in schema order.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from contract.schema import Feature, Schema

STRICT = ConfigDict(extra="forbid")


def _feature_type(feature: Feature) -> Any:
    if feature.type == "number":
        kind: Any = Annotated[
            float,
            Field(strict=True, ge=feature.min, le=feature.max, allow_inf_nan=False),
        ]
        doc = f"number in [{feature.min}, {feature.max}]"
    else:
        kind = Literal[tuple(feature.categories)]
        doc = "one of " + ", ".join(feature.categories)
    if feature.nullable:
        kind, doc = kind | None, doc + "; null if unknown"
    return kind, doc


def example_value(feature: Feature) -> Any:
    if feature.type == "number":
        return round((feature.min + feature.max) / 2, 1)
    return feature.categories[0]


def instance_model(schema: Schema) -> type[BaseModel]:
    """One instance: every feature required (null allowed where nullable), nothing extra."""
    fields: dict[str, Any] = {}
    for i, feature in enumerate(schema.features):
        kind, doc = _feature_type(feature)
        fields[f"f{i}"] = (
            kind,
            Field(..., alias=feature.name, description=doc, examples=[example_value(feature)]),
        )
    return create_model("Instance", __config__=STRICT, **fields)


def request_model(instance: type[BaseModel], max_batch: int, example: dict) -> type[BaseModel]:
    """The /predict body: 1 to ``max_batch`` instances."""
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        instances=(list[instance], Field(..., min_length=1, max_length=max_batch)),
    )


class ModelRef(BaseModel):
    """Which pinned bytes answered: variant, artifact name, md5 from dvc.lock, git rev."""

    variant: str
    name: str
    md5: str
    rev: str


def response_model(schema: Schema) -> type[BaseModel]:
    """The /predict answer: per instance a label and class probabilities (classification) or
    a value (regression), and the model that answered."""
    if schema.task == "classification":
        names = [str(c) for c in schema.classes]
        prediction = create_model(
            "Prediction",
            label=(Literal[tuple(schema.classes)], ...),
            probabilities=(dict[str, float], Field(..., examples=[dict.fromkeys(names, 0.0)])),
        )
    else:
        prediction = create_model(
            "Prediction", value=(float, Field(..., description=f"predicted {schema.target}"))
        )
    return create_model(
        "PredictResponse", predictions=(list[prediction], ...), model=(ModelRef, ...)
    )


def build(schema: Schema, max_batch: int) -> tuple[type, type]:
    """Request and response models for one artifact schema."""
    instance = instance_model(schema)
    example = {"instances": [{f.name: example_value(f) for f in schema.features}]}
    return request_model(instance, max_batch, example), response_model(schema)
