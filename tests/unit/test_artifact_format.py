"""Unit: the artifact zip (contract/artifact.py) is reproducible, round-trips, and refuses
what is not its format, naming both versions for an older lockserve artifact."""

import io
import json
import pickle
import zipfile

import pytest

from contract import artifact
from contract.schema import ContractError, Feature, Schema
from src.stage import canonical_pickle

SCHEMA = Schema(
    "classification",
    "species",
    (Feature("island", "category", False, categories=("a", "b")),),
    ("A", "B"),
    1,
)
SPEC = {
    "inputs": ["island_a", "island_b"],
    "numeric": [],
    "categorical": [{"name": "island", "fill": "missing", "categories": ["a", "b"]}],
}


def pack(onnx: bytes | None = b"onnx", **meta) -> bytes:
    return artifact.pack(canonical_pickle({"m": 1}), SCHEMA, {"estimator": "x", **meta}, SPEC, onnx)


def rezip(data: bytes, **replace: bytes | None) -> bytes:
    """The same zip with members replaced (None: removed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as out:
        for name in src.namelist():
            content = replace.get(name, src.read(name))
            if content is not None:
                out.writestr(name, content)
    return buf.getvalue()


def test_pack_is_byte_for_byte_reproducible():
    assert pack() == pack()
    assert pack() != pack(estimator="y")


def test_pack_layout_and_round_trip():
    data = pack()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == list(artifact.MEMBERS)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    parts = artifact.read(data)
    assert parts.schema == SCHEMA and parts.preprocess == SPEC and parts.onnx == b"onnx"
    assert parts.metadata == {"estimator": "x", "format": artifact.FORMAT, "task": "classification"}
    assert parts.sklearn_pipeline() == {"m": 1} and parts.classes == ["A", "B"]


def test_onnx_member_is_optional():
    data = pack(onnx=None)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert "model.onnx" not in zf.namelist()
    assert artifact.read(data).onnx is None


def test_older_lockserve_artifact_is_refused_naming_both_versions():
    old = rezip(pack(), **{"metadata.json": json.dumps({"format": "lockserve-model/2"}).encode()})
    with pytest.raises(ContractError) as err:
        artifact.read(old)
    assert "lockserve-model/2" in str(err.value) and artifact.FORMAT in str(err.value)
    assert "dvc repro" in str(err.value)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"metadata.json": b'{"format": "other/9"}'}, "artifact format 'other/9'"),
        ({"metadata.json": None}, "no metadata.json"),
        ({"schema.json": None}, "lacks schema.json"),
        ({"schema.json": b'{"task": "ranking"}'}, "task 'ranking'"),
        ({"schema.json": b"[1, 2"}, "not a lockserve model zip"),
    ],
)
def test_read_refuses_what_is_not_the_format(replace, message):
    with pytest.raises(ContractError, match=message):
        artifact.read(rezip(pack(), **replace))


def test_not_a_zip_is_refused():
    with pytest.raises(ContractError, match="not a lockserve model zip"):
        artifact.read(b"PK\x03\x04 truncated")


def test_pickled_member_round_trips_exactly():
    data = artifact.pack(pickle.dumps((1.0, -0.0)), SCHEMA, {}, SPEC, None)
    assert repr(artifact.read(data).sklearn_pipeline()) == "(1.0, -0.0)"
