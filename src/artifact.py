"""The model artifact, training side: one deterministic zip holding predictor, schema, metadata.

Layout (the contract with api/, see README "Artifact contract"):
  model.pkl        sklearn Pipeline(preprocess, estimator): raw feature columns in, classes out
  schema.json      input schema: target, classes, features (name, type, categories or range)
  metadata.json    format, name, estimator, train params, training-data md5, library versions
  preprocess.json  imputation fills and one-hot categories, in model-input order
  model.onnx       (when skl2onnx can convert the estimator) estimator only: float32 inputs in
                   preprocess.json order -> "probabilities" in metadata.classes order
Members are stored uncompressed with fixed timestamps, so equal contents give equal bytes.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from typing import Any

FORMAT = "lockserve-model/2"
NAME = "penguin-classifier"
MEMBERS = ("model.pkl", "schema.json", "metadata.json", "preprocess.json", "model.onnx")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def pack(
    model_bytes: bytes,
    schema: dict[str, Any],
    metadata: dict[str, Any],
    preprocess: dict[str, Any],
    onnx_bytes: bytes | None,
) -> bytes:
    """Zip the predictor with its schema, metadata and compiled form, byte for byte reproducibly."""
    buf = io.BytesIO()
    contents = (
        model_bytes,
        _json(schema),
        _json({**metadata, "format": FORMAT}),
        _json(preprocess),
        onnx_bytes,
    )
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in zip(MEMBERS, contents, strict=True):
            if data is None:
                continue
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()


def unpack(data: bytes) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Read an artifact written by :func:`pack` (used by evaluate on the pipeline's own output).

    ``metadata`` gains the parsed ``preprocess`` spec and the raw ``onnx`` bytes (or None).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        metadata = json.loads(zf.read("metadata.json"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"artifact format {metadata.get('format')!r}, expected {FORMAT}")
        schema = json.loads(zf.read("schema.json"))
        model = pickle.loads(zf.read("model.pkl"))  # noqa: S301 - our own stage's output
        preprocess = json.loads(zf.read("preprocess.json"))
        onnx = zf.read("model.onnx") if "model.onnx" in zf.namelist() else None
    return model, schema, {**metadata, "preprocess": preprocess, "onnx": onnx}
