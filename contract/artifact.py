"""The model artifact: one deterministic zip, its members and its format version.

  model.pkl        sklearn Pipeline(preprocess, estimator): raw feature columns in; class
                   probabilities (classification) or values (regression) out
  schema.json      the input schema (contract.schema)
  metadata.json    format, task, estimator, train params, classes, training data, libraries,
                   one real training row (`example`, the service page's starting values)
  preprocess.json  the preprocessing as data (contract.features)
  model.onnx       (when skl2onnx converts the estimator) the estimator alone: float32 input in
                   preprocess.json order -> OUTPUTS[task]
Members are stored uncompressed with fixed timestamps, so equal contents give equal bytes.
"""

from __future__ import annotations

import io
import json
import lzma
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from contract.schema import ContractError, Schema, shown

FORMAT = "lockserve-model/3"
MEMBERS = ("model.pkl", "schema.json", "metadata.json", "preprocess.json", "model.onnx")
REQUIRED = MEMBERS[:4]
OUTPUTS = {"classification": "probabilities", "regression": "variable"}
MAX_MEMBER_BYTES = 1 << 30
_EPOCH = (1980, 1, 1, 0, 0, 0)
# How damaged bytes fail: as a zip, in a member's decompressor (OSError, zlib.error, LZMAError),
# as an unknown or encrypted compression (RuntimeError), as JSON that does not parse or is not
# UTF-8 (ValueError) or that nests past the recursion limit (RecursionError, a RuntimeError).
_UNREADABLE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    ValueError,
    OSError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
)


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def pack(
    model_pkl: bytes,
    schema: Schema,
    metadata: dict[str, Any],
    preprocess: dict[str, Any],
    onnx: bytes | None,
) -> bytes:
    """Zip the predictor with its schema, metadata and compiled form, byte for byte reproducibly."""
    contents = (
        model_pkl,
        _json(schema.to_json()),
        _json({**metadata, "format": FORMAT, "task": schema.task}),
        _json(preprocess),
        onnx,
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in zip(MEMBERS, contents, strict=True):
            if data is None:
                continue
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()


@dataclass(frozen=True)
class Artifact:
    """An artifact's parts: schema, metadata, preprocessing spec, ONNX graph, pickled pipeline."""

    schema: Schema
    metadata: dict[str, Any]
    preprocess: dict[str, Any]
    onnx: bytes | None
    pickled: bytes

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def classes(self) -> list[str | int]:
        return list(self.schema.classes)

    def sklearn_pipeline(self) -> Any:
        """Unpickle the sklearn pipeline. Only for bytes whose hash was checked against a pin:
        loading a pickle runs code."""
        return pickle.loads(self.pickled)  # noqa: S301 - callers verify the md5 first


def read(data: bytes) -> Artifact:
    """The parts of a model zip; ContractError names what is wrong (format, member, field)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            missing = [m for m in REQUIRED if m not in infos]
            if "metadata.json" in missing:
                raise ContractError("artifact is not a lockserve model zip: no metadata.json")
            big = [n for n, i in infos.items() if i.file_size > MAX_MEMBER_BYTES]
            if big:
                raise ContractError(f"artifact member {big[0]!r} is over {MAX_MEMBER_BYTES} bytes")
            metadata = json.loads(zf.read("metadata.json"))
            found = metadata.get("format") if isinstance(metadata, dict) else None
            if found != FORMAT:
                raise ContractError(_format_message(found))
            if missing:
                raise ContractError(f"artifact lacks {', '.join(missing)}")
            schema = Schema.from_json(json.loads(zf.read("schema.json")))
            preprocess = json.loads(zf.read("preprocess.json"))
            onnx = zf.read("model.onnx") if "model.onnx" in infos else None
            pickled = zf.read("model.pkl")
    except _UNREADABLE as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError(f"artifact is not a lockserve model zip: {exc}") from None
    if metadata.get("task") != schema.task:
        raise ContractError(
            f"artifact metadata says task {shown(metadata.get('task'))}, its schema {schema.task!r}"
        )
    if not isinstance(preprocess, dict):
        raise ContractError("artifact preprocess.json is not a JSON object")
    return Artifact(schema, metadata, preprocess, onnx, pickled)


def _format_message(found: Any) -> str:
    if isinstance(found, str) and found.startswith("lockserve-model/") and found.isprintable():
        return (
            f"artifact format {found} cannot be read by this lockserve, which reads {FORMAT}: "
            "rebuild it with `dvc repro` or serve it with the lockserve that built it"
        )
    return f"artifact format {shown(found)} is not {FORMAT}"
