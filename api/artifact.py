"""The model artifact, deploy side: verify the bytes, then read model.zip's three members.

The format is the contract with the pipeline (README "Artifact contract"); this module shares
no code with src/ and is held to it by a round-trip test.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

FORMAT = "lockserve-model/1"


class ArtifactError(Exception):
    """The bytes are not a loadable lockserve model."""


@dataclass(frozen=True)
class Artifact:
    """A deserialised artifact: the sklearn predictor, its input schema and metadata."""

    predictor: Any
    schema: dict[str, Any]
    metadata: dict[str, Any]


def load(data: bytes, expected_md5: str) -> Artifact:
    """Check ``data`` against the pinned md5 and only then unpickle it."""
    found = hashlib.md5(data).hexdigest()
    if found != expected_md5:
        raise ArtifactError(f"artifact md5 {found} does not match the pinned {expected_md5}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            metadata = json.loads(zf.read("metadata.json"))
            if metadata.get("format") != FORMAT:
                raise ArtifactError(f"artifact format {metadata.get('format')!r}, not {FORMAT}")
            schema = json.loads(zf.read("schema.json"))
            predictor = pickle.loads(zf.read("model.pkl"))  # noqa: S301 - md5 verified above
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactError(f"artifact is not a lockserve model zip: {exc}") from None
    return Artifact(predictor, schema, metadata)
