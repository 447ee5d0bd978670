"""The model artifact, deploy side: verify the bytes against the pin, then read them.

The format itself is the contract shared with the pipeline (contract/artifact.py); this module
only adds the rule that nothing is read before its md5 matches the one dvc.lock pins.
"""

from __future__ import annotations

import hashlib

from contract.artifact import FORMAT, Artifact, read
from contract.schema import ContractError

__all__ = ["FORMAT", "Artifact", "ArtifactError", "load"]


class ArtifactError(Exception):
    """The bytes are not a loadable lockserve model."""


def load(data: bytes, expected_md5: str) -> Artifact:
    """Check ``data`` against the pinned md5 and only then read it."""
    found = hashlib.md5(data).hexdigest()
    if found != expected_md5:
        raise ArtifactError(f"artifact md5 {found} does not match the pinned {expected_md5}")
    try:
        return read(data)
    except ContractError as exc:
        raise ArtifactError(str(exc)) from None
