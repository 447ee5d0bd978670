"""Unit: the protocols' codecs on their own: Triton's BYTES layout, raw tensors, the label's
datatype for integer classes, MLflow's JSON shapes and CSV, and MLflow's error bodies."""

import struct

import numpy as np
import orjson
import pytest

from api import oip
from api.problems import Kind, ServiceError
from api.protocols import mlflow
from contract.schema import Feature, Schema


def schema(classes: tuple) -> Schema:
    return Schema(
        task="classification",
        target="y",
        features=(Feature("x", "number", False, (), 0.0, 1.0),),
        classes=classes,
    )


@pytest.mark.parametrize(("classes", "datatype"), [((0, 1, 2), "INT64"), (("a", "b"), "BYTES")])
def test_the_label_is_int64_for_integer_classes_and_bytes_otherwise(classes, datatype):
    assert oip.label_datatype(schema(classes)) == datatype
    assert oip.output_metadata(schema(classes))[0] == {
        "name": "label",
        "datatype": datatype,
        "shape": [-1],
    }


def test_bytes_elements_round_trip_through_the_length_prefixed_layout():
    items = [b"Biscoe", b"", "Ågot".encode()]
    raw = oip.join_bytes(items)
    assert raw[:4] == struct.pack("<I", 6)
    assert oip.split_bytes(raw, "island") == items


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            struct.pack("<I", 10) + b"abc",
            "input 'island': BYTES element of 10 bytes runs past the data",
        ),
        (b"\x01\x00", "input 'island': BYTES data ends inside an element's length"),
    ],
)
def test_a_bytes_tensor_that_runs_short_is_refused(raw, message):
    with pytest.raises(ServiceError) as err:
        oip.split_bytes(raw, "island")
    assert (err.value.kind, err.value.message) == (Kind.INVALID, message)


def test_raw_numbers_are_read_in_their_datatype_and_unknown_datatypes_refused():
    np.testing.assert_array_equal(
        oip.from_raw("x", "FP32", np.array([1.5, 2.5], "<f4").tobytes()), [1.5, 2.5]
    )
    assert oip.from_raw("x", "INT16", struct.pack("<hh", -1, 7)).tolist() == [-1, 7]
    with pytest.raises(ServiceError) as err:
        oip.from_raw("x", "BF16", b"\x00\x00")
    assert err.value.message == "input 'x': datatype 'BF16' is not supported"


def test_raw_output_tensors_are_little_endian_in_their_datatype():
    labels = oip.Tensor("label", "BYTES", [2], ["Gentoo", "Adelie"])
    assert oip.raw(labels) == oip.join_bytes([b"Gentoo", b"Adelie"])
    proba = oip.Tensor("probabilities", "FP32", [1, 2], np.array([0.25, 0.75], np.float32))
    assert oip.raw(proba) == struct.pack("<ff", 0.25, 0.75)


@pytest.mark.parametrize(
    ("body", "records"),
    [
        (
            {
                "dataframe_split": {
                    "columns": ["x", "y"],
                    "data": [[1, "a"], [2, None]],
                    "index": [5, 6],
                }
            },
            [{"x": 1, "y": "a"}, {"x": 2, "y": None}],
        ),
        ({"dataframe_records": [{"x": 1.0}]}, [{"x": 1.0}]),
        ({"instances": [{"x": 1.0}], "params": {"k": 1}}, [{"x": 1.0}]),
        (
            {"instances": {"x": [1.0, 2.0], "y": ["a", "b"]}},
            [{"x": 1.0, "y": "a"}, {"x": 2.0, "y": "b"}],
        ),
        ({"inputs": {"x": [3.0]}}, [{"x": 3.0}]),
        ({"inputs": [{"x": float("nan")}]}, [{"x": None}]),
    ],
)
def test_mlflows_json_formats_become_records(body, records):
    text = orjson.dumps(body) if "nan" not in repr(body) else b'{"inputs": [{"x": NaN}]}'
    assert mlflow.instances_from_json(text) == records


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"5", "Received a number."),
        (b"true", "Received a boolean."),
        (b"null", "Received null."),
    ],
)
def test_a_json_body_that_is_no_object_says_what_it_is(body, message):
    with pytest.raises(ServiceError) as err:
        mlflow.instances_from_json(body)
    assert err.value.kind == Kind.INVALID and err.value.message.endswith(message)


def test_csv_reads_missing_values_numbers_and_text_as_pandas_does():
    body = "\ufeffx,y\r\n1.5,a\r\nNA,\r\n,NULL\r\n".encode()
    assert mlflow.instances_from_csv(body, {"x"}) == [
        {"x": 1.5, "y": "a"},
        {"x": None, "y": None},
        {"x": None, "y": None},
    ]
    assert mlflow.instances_from_csv(b"x\nheavy\n", {"x"}) == [{"x": "heavy"}]


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b"\xff\xfex\n", Kind.MALFORMED, "CSV body is not UTF-8 text"),
        (b'x\n"a"b"\n', Kind.MALFORMED, "CSV body does not parse: ',' expected after '\"'"),
        (b"", Kind.INVALID, "CSV body has no header row"),
    ],
)
def test_a_csv_body_that_cannot_be_read_is_refused_with_its_kind(body, kind, message):
    with pytest.raises(ServiceError) as err:
        mlflow.instances_from_csv(body, set())
    assert (err.value.kind, err.value.message) == (kind, message)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (413, "REQUEST_LIMIT_EXCEEDED"),
        (404, "RESOURCE_DOES_NOT_EXIST"),
        (405, "BAD_REQUEST"),
        (418, "BAD_REQUEST"),
        (500, "INTERNAL_ERROR"),
    ],
)
def test_errors_before_the_route_take_mlflows_codes(status, code):
    assert orjson.loads(mlflow._shape_of_status(status, "why")) == {
        "error_code": code,
        "message": "why",
    }
