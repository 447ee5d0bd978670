"""Unit: the artifact zip is reproducible and round-trips through the pipeline's reader."""

import io
import zipfile

import pytest

from src import artifact
from src.stage import canonical_pickle

SCHEMA = {"target": "species", "classes": ["A", "B"], "features": []}


SPEC = {"inputs": [], "numeric": [], "categorical": []}


def test_pack_is_byte_for_byte_reproducible():
    one = artifact.pack(canonical_pickle({"m": 1}), SCHEMA, {"name": "x"}, SPEC, b"onnx")
    two = artifact.pack(canonical_pickle({"m": 1}), dict(SCHEMA), {"name": "x"}, SPEC, b"onnx")
    assert one == two


def test_pack_layout_and_round_trip():
    data = artifact.pack(canonical_pickle({"m": 1}), SCHEMA, {"name": "x"}, SPEC, b"onnx")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [
            "model.pkl",
            "schema.json",
            "metadata.json",
            "preprocess.json",
            "model.onnx",
        ]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    model, schema, meta = artifact.unpack(data)
    assert model == {"m": 1} and schema == SCHEMA
    assert meta == {"name": "x", "format": artifact.FORMAT, "preprocess": SPEC, "onnx": b"onnx"}


def test_onnx_member_is_optional():
    data = artifact.pack(canonical_pickle({"m": 1}), SCHEMA, {"name": "x"}, SPEC, None)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert "model.onnx" not in zf.namelist()
    assert artifact.unpack(data)[2]["onnx"] is None


def test_unpack_rejects_another_format():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", '{"format": "other/9"}')
    with pytest.raises(ValueError, match="artifact format 'other/9'"):
        artifact.unpack(buf.getvalue())
