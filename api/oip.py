"""The Open Inference Protocol v2's data model, shared by its REST and gRPC adapters.

A table arrives as one input tensor per feature (``content_type: pd``: strings as BYTES,
numbers as any integer or float type) and leaves as ``label`` (BYTES, or INT64 for integer
classes) and ``probabilities`` (FP32, rows x classes) for classification, ``value`` (FP64) for
regression. Tensors become instances for the core's one validator, so every protocol refuses
exactly what /predict refuses. A NaN in a number tensor means missing, as in pandas.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from api import lenient
from api.core import Answer, Core
from api.problems import Kind, ServiceError
from contract.schema import Schema

NUMBER_TYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
PLATFORM = "lockserve"
EXTENSIONS = ["binary_tensor_data", "model_repository_versions"]


@dataclass
class Tensor:
    """One named tensor: datatype, shape and its elements (flat, row-major)."""

    name: str
    datatype: str
    shape: list[int]
    data: Any  # list of Python values or a 1-D numpy array


def _invalid(message: str) -> ServiceError:
    return ServiceError(Kind.INVALID, message)


def input_metadata(schema: Schema) -> list[dict[str, Any]]:
    """One input per feature: BYTES for a category, FP64 for a number (any number type is
    accepted), shape [-1]."""
    return [
        {"name": f.name, "datatype": "FP64" if f.type == "number" else "BYTES", "shape": [-1]}
        for f in schema.features
    ]


def label_datatype(schema: Schema) -> str:
    return "INT64" if all(isinstance(c, int) for c in schema.classes) else "BYTES"


def output_metadata(schema: Schema) -> list[dict[str, Any]]:
    if schema.task == "classification":
        return [
            {"name": "label", "datatype": label_datatype(schema), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(schema.classes)]},
        ]
    return [{"name": "value", "datatype": "FP64", "shape": [-1]}]


def model_metadata(core: Core) -> dict[str, Any]:
    """GET /v2/models/{name}: versions are the served md5s, the primary's first."""
    primary = core.store.get(core.strategy.primary)
    versions = [primary.md5] + [
        core.store.get(v).md5 for v in core.store.variants() if v != core.strategy.primary
    ]
    parameters: dict[str, Any] = {
        "task": core.schema.task,
        "target": core.schema.target,
        "rev": primary.resolved.rev,
        "strategy": core.strategy.name,
    }
    if core.schema.task == "classification":
        parameters["classes"] = list(core.schema.classes)
    return {
        "name": core.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": input_metadata(core.schema),
        "outputs": output_metadata(core.schema),
        "parameters": parameters,
    }


def check_model(core: Core, name: str, version: str | None) -> None:
    """NOT_FOUND unless ``name`` is the served model (and ``version`` one of its md5s)."""
    if name != core.name:
        raise ServiceError(
            Kind.NOT_FOUND, f"unknown model {name!r}; this server serves {core.name!r}"
        )
    if version:
        core.variant_of(version)


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """Triton's raw BYTES layout: each element a 4-byte little-endian length, then the bytes."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise _invalid(f"input {name!r}: BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise _invalid(f"input {name!r}: BYTES element of {size} bytes runs past the data")
        out.append(raw[at : at + size])
        at += size
    return out


def join_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def from_raw(name: str, datatype: str, raw: bytes) -> Any:
    """A tensor's elements from its raw bytes (binary extension, raw_input_contents)."""
    if datatype == "BYTES":
        return split_bytes(raw, name)
    dtype = NUMBER_TYPES.get(datatype)
    if dtype is None:
        raise _invalid(f"input {name!r}: datatype {datatype!r} is not supported")
    if len(raw) % dtype.itemsize:
        raise _invalid(
            f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} elements"
        )
    return np.frombuffer(raw, dtype)


KINDS = {  # JSON element types a datatype takes (None: a missing value)
    "BYTES": (str,),
    "BOOL": (bool,),
    **{f"INT{n}": (int,) for n in (8, 16, 32, 64)},
    **{f"UINT{n}": (int,) for n in (8, 16, 32, 64)},
    **{f"FP{n}": (int, float) for n in (16, 32, 64)},
}


def checked(name: str, datatype: str, data: Any) -> list[Any]:
    """JSON tensor data as a flat list, each element of its datatype's JSON type."""
    kinds = KINDS.get(datatype)
    if kinds is None:
        raise _invalid(f"input {name!r}: datatype {datatype!r} is not supported")
    if not isinstance(data, list):
        raise _invalid(f"input {name!r}: data must be a list")
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    for i, value in enumerate(flat):
        if value is None:
            continue
        ok = isinstance(value, kinds) and (datatype == "BOOL" or not isinstance(value, bool))
        if not ok:
            kind = (
                "text"
                if datatype == "BYTES"
                else "true or false"
                if datatype == "BOOL"
                else ("a whole number" if datatype.startswith(("INT", "UINT")) else "a number")
            )
            raise _invalid(
                f"input {name!r}: element {i} ({value!r}) is not {kind}, as {datatype} is"
            )
    return flat


def _elements(tensor: Tensor, feature: Any) -> list[Any]:
    """The tensor's elements as Python values: text for BYTES, numbers; missing as None (NaN
    in a number tensor; an empty BYTES element where the empty string is not a category)."""
    data = tensor.data
    if isinstance(data, np.ndarray):
        data = data.tolist()
    if tensor.datatype == "BYTES":
        try:
            text = [x.decode("utf-8") if isinstance(x, bytes) else x for x in data]
        except UnicodeDecodeError:
            raise _invalid(f"input {tensor.name!r}: BYTES element is not UTF-8 text") from None
        if feature.type == "category" and "" not in feature.categories:
            text = [None if x == "" else x for x in text]
        return text
    if tensor.datatype not in NUMBER_TYPES:
        raise _invalid(f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported")
    return [lenient.missing(x) for x in data]


def _rows_in(tensor: Tensor, count: int) -> int:
    shape = tensor.shape
    if not 1 <= len(shape) <= 2 or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        raise _invalid(
            f"input {tensor.name!r}: shape {shape} is not [n] or [n, 1] (one column per input)"
        )
    if shape[0] != count:
        raise _invalid(f"input {tensor.name!r}: shape {shape} does not match its {count} elements")
    return shape[0]


def rows(core: Core, tensors: list[Tensor]) -> list[tuple[Any, ...]]:
    """Input tensors (one per feature) as validated rows, or INVALID naming the input."""
    names = core.schema.names
    given = {t.name: t for t in tensors}
    if len(given) != len(tensors):
        raise _invalid("inputs: the same input name is given twice")
    unknown = [n for n in given if n not in names]
    missing = [n for n in names if n not in given]
    if unknown or missing:
        problem = f"unknown input {unknown[0]!r}" if unknown else f"missing input {missing[0]!r}"
        raise _invalid(f"inputs: {problem}; the model takes one input per feature: {names}")
    columns, counts = [], {}
    for feature in core.schema.features:
        values = _elements(given[feature.name], feature)
        counts[feature.name] = _rows_in(given[feature.name], len(values))
        columns.append(values)
    if len(set(counts.values())) != 1:
        described = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise _invalid(f"inputs: every input must have the same number of rows, got {described}")
    if not counts[names[0]]:
        raise _invalid("inputs: the tensors hold no rows")
    return core.rows_of(
        [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    )


def outputs(answer: Answer, requested: list[str] | None) -> list[Tensor]:
    """The answer's output tensors, only the requested ones when some are named."""
    backend = answer.model.backend
    n = len(answer.answered)
    if backend.task == "classification":
        if all(isinstance(c, int) for c in backend.classes):
            label = Tensor("label", "INT64", [n], np.asarray(answer.answered, np.int64))
        else:
            label = Tensor("label", "BYTES", [n], [str(x) for x in answer.answered])
        proba = np.ascontiguousarray(answer.output, np.float32)
        produced = [label, Tensor("probabilities", "FP32", list(proba.shape), proba.reshape(-1))]
    else:
        values = np.asarray(answer.output, np.float64)
        produced = [Tensor("value", "FP64", [n], values)]
    if not requested:
        return produced
    by_name = {t.name: t for t in produced}
    unknown = [r for r in requested if r not in by_name]
    if unknown:
        raise _invalid(f"outputs: unknown output {unknown[0]!r}; the model gives {list(by_name)}")
    return [by_name[r] for r in requested]


def raw(tensor: Tensor) -> bytes:
    """A tensor's elements as raw bytes (little-endian; BYTES length-prefixed)."""
    if tensor.datatype == "BYTES":
        return join_bytes([str(x).encode("utf-8") for x in tensor.data])
    return np.ascontiguousarray(tensor.data, NUMBER_TYPES[tensor.datatype]).tobytes()


def answer_parameters(answer: Answer) -> dict[str, str]:
    """What every infer response names: the variant, md5 and rev that answered."""
    ref = answer.model.ref
    return {"variant": ref["variant"], "md5": ref["md5"], "rev": ref["rev"]}
