"""The model artifact, deploy side: verify the bytes, then read model.zip's members.

The format is the contract with the pipeline (README "Artifact contract"); this module shares
no code with src/ and is held to it by a round-trip test. The pickled sklearn pipeline is only
unpickled when the sklearn backend asks for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

FORMAT = "lockserve-model/2"


class ArtifactError(Exception):
    """The bytes are not a loadable lockserve model."""


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: schema, metadata, preprocessing spec, ONNX graph, pickled pipeline."""

    schema: dict[str, Any]
    metadata: dict[str, Any]
    preprocess: dict[str, Any]
    onnx: bytes | None
    pickled: bytes

    def sklearn_pipeline(self) -> Any:
        """Unpickle the sklearn pipeline (the bytes were md5-verified by :func:`load`)."""
        return pickle.loads(self.pickled)  # noqa: S301 - verified against dvc.lock


def load(data: bytes, expected_md5: str) -> Artifact:
    """Check ``data`` against the pinned md5 and only then read it."""
    found = hashlib.md5(data).hexdigest()
    if found != expected_md5:
        raise ArtifactError(f"artifact md5 {found} does not match the pinned {expected_md5}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            metadata = json.loads(zf.read("metadata.json"))
            if metadata.get("format") != FORMAT:
                raise ArtifactError(f"artifact format {metadata.get('format')!r}, not {FORMAT}")
            names = set(zf.namelist())
            return Artifact(
                schema=json.loads(zf.read("schema.json")),
                metadata=metadata,
                preprocess=json.loads(zf.read("preprocess.json")),
                onnx=zf.read("model.onnx") if "model.onnx" in names else None,
                pickled=zf.read("model.pkl"),
            )
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactError(f"artifact is not a lockserve model zip: {exc}") from None
