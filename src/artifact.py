"""The model artifact, training side: one deterministic zip holding predictor, schema, metadata.

Layout (the contract with api/, see README "Artifact contract"):
  model.pkl      sklearn Pipeline(preprocess, estimator): raw feature columns in, classes out
  schema.json    input schema: target, classes, features (name, type, categories or range)
  metadata.json  format, name, estimator, train params, training-data md5, library versions
Members are stored uncompressed with fixed timestamps, so equal contents give equal bytes.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from typing import Any

FORMAT = "lockserve-model/1"
NAME = "penguin-classifier"
MEMBERS = ("model.pkl", "schema.json", "metadata.json")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def pack(model_bytes: bytes, schema: dict[str, Any], metadata: dict[str, Any]) -> bytes:
    """Zip the pickled predictor with its schema and metadata, byte for byte reproducibly."""
    buf = io.BytesIO()
    contents = (model_bytes, _json(schema), _json({**metadata, "format": FORMAT}))
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in zip(MEMBERS, contents, strict=True):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()


def unpack(data: bytes) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Read an artifact written by :func:`pack` (used by evaluate on the pipeline's own output)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        metadata = json.loads(zf.read("metadata.json"))
        if metadata.get("format") != FORMAT:
            raise ValueError(f"artifact format {metadata.get('format')!r}, expected {FORMAT}")
        schema = json.loads(zf.read("schema.json"))
        model = pickle.loads(zf.read("model.pkl"))  # noqa: S301 - our own stage's output
    return model, schema, metadata
