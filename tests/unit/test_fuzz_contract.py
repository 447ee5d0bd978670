"""Unit, fuzzed: whatever bytes or documents arrive, the artifact contract and the request
validator generated from it answer with a value or with their one documented error, in one line.

- ``contract.artifact.read``: random bytes, truncated, bit-flipped or header-patched artifacts,
  members declared over ``MAX_MEMBER_BYTES``, missing members and hostile metadata, schema and
  preprocess JSON give an Artifact (whose preprocess.json builds the service's FeatureBuilder or
  raises ContractError) or ContractError, and nothing else.
- ``contract.schema.Schema.from_json``: any JSON-like document gives ContractError or a Schema
  that round-trips through to_json, through JSON text and through an artifact zip, and that the
  service can build its request model from.
- ``contract.features.FeatureBuilder``: any preprocess spec gives a builder or ContractError.
- ``api.core.Core.rows`` and ``rows_of`` over ``api.schemas.build`` for generated schemas (odd
  feature names included): any body gives rows the schema allows or a ServiceError of kind
  MALFORMED or INVALID with a one-line message; every valid instance is accepted, values in
  schema order.

Runs are derandomized, so CI sees the same examples every time.
"""

import copy
import io
import json
import math
import struct
import zipfile
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.core import Core
from api.problems import Kind, ServiceError
from api.schemas import build
from contract import artifact
from contract.features import FeatureBuilder
from contract.schema import TASKS, ContractError, Feature, Schema

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCHEMA = Schema(
    "classification",
    "species",
    (
        Feature("island", "category", False, categories=("Biscoe", "Dream")),
        Feature("mass (g)", "number", True, min=2000.0, max=7000.0),
    ),
    ("Adelie", "Gentoo"),
    1,
)
SPEC = {
    "inputs": ["mass (g)", "island_Biscoe", "island_Dream"],
    "numeric": [{"name": "mass (g)", "fill": 4200.0}],
    "categorical": [{"name": "island", "fill": "Biscoe", "categories": ["Biscoe", "Dream"]}],
}
GOOD = artifact.pack(b"pickled pipeline", SCHEMA, {"estimator": "x"}, SPEC, b"onnx graph")
with zipfile.ZipFile(io.BytesIO(GOOD)) as _zf:
    GOOD_MEMBERS = {name: _zf.read(name) for name in _zf.namelist()}
DOCS = {name: json.loads(GOOD_MEMBERS[name]) for name in artifact.MEMBERS[1:4]}

RESERVED = ["model_config", "__class__", "__dict__", "instances", "f0", "f1", "model_fields"]
ODD_NAMES = [*RESERVED, "'", '"', "\x00", " ", "a b", "島 🐧", "\x7f", "\t", "\\"]
# with a line break or a lone surrogate (JSON's \u escapes can spell one)
ODDER_NAMES = ["\n", "a\r\nb", "\x85", "\x1e", "\u2028", "\ud800", "x\udc80"]
NUMBERS = [10**400, -(10**400), 2**64, -0.0, 5e-324, 1e308, math.nan, math.inf, -math.inf, True]
MARKER = "\x00raw literal\x00"  # stands for a value spelled in JSON text, not in Python
HOSTILE = [
    *NUMBERS,
    False,
    None,
    "",
    "\x00\x07\x1b\n\r\t\x7f",
    "\ud800",
    "\u2028",
    "島 🐧",
    "NaN",
    "1e3",
    [],
    {},
    [[[[]]]],
    {"": None},
    [1, "a", None],
    MARKER,
]
RAW = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1" * 5000,
    "1" + "0" * 400,
    "-0",
    "0.1e-400",
    '"\\ud800"',
    '"\\u0000"',
    '{"k": 1, "k": 2}',
]


def deep_list(depth):
    out = []
    for _ in range(depth):
        out = [out]
    return out


def one_line(message):
    assert message and len(message.splitlines()) == 1, repr(message)


def nested(depth):
    """JSON text nested ``depth`` deep: arrays, objects or an array never closed."""
    return st.sampled_from(
        [
            "[" * depth + "]" * depth,
            '{"a":' * depth + "0" + "}" * depth,
            "[" * depth,
        ]
    )


raw_literals = st.sampled_from(RAW) | st.integers(1, 5000).flatmap(nested)


# Text for the contract: any code point (lone surrogates too), often an odd name. The service's
# names: any text UTF-8 can carry, line breaks included.
TEXT = st.sampled_from(ODD_NAMES + ODDER_NAMES) | st.text(
    st.characters(exclude_categories=[]), max_size=8
)
SERVICE_TEXT = st.sampled_from(ODD_NAMES + ["\n", "a\r\nb", "\x85", "\x1e", "\u2028"]) | st.text(
    st.characters(exclude_categories=["Cs"]), max_size=8
)
numbers = st.sampled_from(NUMBERS) | st.floats() | st.integers()


def json_values(keys=TEXT):
    scalars = st.none() | st.booleans() | numbers | keys
    return st.recursive(
        scalars | st.sampled_from(HOSTILE),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
        max_leaves=10,
    )


def hostile_values(keys=TEXT):
    long_text = st.sampled_from([1_000, 100_000]).map(lambda n: "x" * n)
    return st.one_of(
        st.sampled_from(NUMBERS), st.sampled_from(HOSTILE), long_text, json_values(keys)
    )


hostile = hostile_values()


def paths(doc, at=()):
    yield at
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from paths(value, (*at, i))


@st.composite
def near(draw, doc, values=hostile, keys=TEXT):
    """``doc`` with one value replaced by a hostile one, removed, duplicated or joined by an
    extra key."""
    doc = copy.deepcopy(doc)
    where = draw(st.sampled_from(list(paths(doc))[1:]))
    parent = doc
    for step in where[:-1]:
        parent = parent[step]
    key = where[-1]
    action = draw(st.sampled_from(["replace", "remove", "duplicate", "extra"]))
    if action == "replace":
        parent[key] = draw(values)
    elif action == "remove":
        del parent[key]
    elif isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]) if action == "duplicate" else draw(values))
    else:
        parent[draw(keys)] = draw(values)
    return doc


@st.composite
def encoded(draw, docs):
    """A document as JSON bytes: MARKER spelled as a raw literal, in UTF-8 or another encoding."""
    ascii_only = draw(st.booleans())
    text = json.dumps(draw(docs), ensure_ascii=ascii_only)
    text = text.replace(json.dumps(MARKER, ensure_ascii=ascii_only), draw(raw_literals))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1"]))
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


def member_bytes(name):
    """Bytes for a JSON member: random, any JSON, the member's document one value off, or (for
    metadata.json) a format that claims to be some lockserve format."""
    claims = TEXT.map(lambda suffix: "lockserve-model/" + suffix)
    return st.one_of(
        st.binary(max_size=64),
        encoded(json_values()),
        encoded(near(DOCS[name], hostile)),
        raw_literals.map(str.encode),
        encoded(st.just(DOCS[name]) | claims.map(lambda f: {**DOCS[name], "format": f})),
    )


def zip_of(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def central_headers(data):
    """Offsets of the central directory's file headers."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        at, count = zf.start_dir, len(zf.infolist())
    offsets = []
    for _ in range(count):
        offsets.append(at)
        lengths = struct.unpack_from("<HHH", data, at + 28)
        at += 46 + sum(lengths)
    return offsets


def patched(data, offset, fmt, value):
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# (offset in a central directory file header, struct format): flags, compression, CRC-32, sizes,
# name/extra/comment lengths, local header offset; a local header has them (but the last two) 2
# bytes earlier
HEADER_FIELDS = [(8, "<H"), (10, "<H"), (16, "<I"), (20, "<I"), (24, "<I")]
HEADER_FIELDS += [(28, "<H"), (30, "<H"), (32, "<H"), (42, "<I")]


@st.composite
def header_patched(draw):
    """GOOD with one field of one member's central or local header overwritten."""
    central = draw(st.sampled_from(central_headers(GOOD)))
    field, fmt = draw(st.sampled_from(HEADER_FIELDS))
    offset = central + field
    if field <= 30 and draw(st.booleans()):  # the same field in the local header
        (local,) = struct.unpack_from("<I", GOOD, central + 42)
        offset = local + field - 2
    top = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
    value = draw(st.sampled_from([0, 1, 8, 12, 14, 99, top]) | st.integers(0, top))
    return patched(GOOD, offset, fmt, value)


@st.composite
def damaged(draw):
    """GOOD truncated, with bits flipped or with a stretch overwritten."""
    data = bytearray(GOOD)
    how = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for at, bit in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)))):
            data[at] ^= 1 << bit
        return bytes(data)
    at = draw(st.integers(0, len(data) - 1))
    chunk = draw(st.binary(min_size=1, max_size=16))
    data[at : at + len(chunk)] = chunk
    return bytes(data)


def encrypted(data):
    """Every member flagged as encrypted, in its central and local header."""
    out = data
    for central in central_headers(data):
        (local,) = struct.unpack_from("<I", data, central + 42)
        for flags in (central + 8, local + 6):
            (value,) = struct.unpack_from("<H", out, flags)
            out = patched(out, flags, "<H", value | 1)
    return out


def compressed_as(data, method):
    out = data
    for central in central_headers(data):
        (local,) = struct.unpack_from("<I", data, central + 42)
        out = patched(patched(out, central + 10, "<H", method), local + 8, "<H", method)
    return out


def read_or_refuse(data):
    """artifact.read, and the FeatureBuilder the service builds from what it read, give their
    value or a one-line ContractError, nothing else."""
    try:
        parts = artifact.read(data)
    except ContractError as exc:
        one_line(str(exc))
        return None
    assert isinstance(parts, artifact.Artifact)
    build_or_refuse(parts.preprocess, parts.schema.names)
    return parts


def build_or_refuse(spec, names):
    try:
        return FeatureBuilder(spec, names)
    except ContractError as exc:
        one_line(str(exc))
        return None


@settings(FUZZ, max_examples=400)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"PK\x03\x04", b"PK\x05\x06", b"PK\x01\x02"]).flatmap(
            lambda head: st.binary(max_size=100).map(lambda tail: head + tail)
        ),
        damaged(),
        header_patched(),
    )
)
@example(GOOD)
@example(b"PK\x03\x04 truncated")
@example(encrypted(GOOD))
@example(compressed_as(GOOD, zipfile.ZIP_DEFLATED))
@example(compressed_as(GOOD, zipfile.ZIP_BZIP2))
@example(compressed_as(GOOD, zipfile.ZIP_LZMA))
@example(compressed_as(GOOD, 99))
def test_any_bytes_are_an_artifact_or_one_contract_error(data):
    parts = read_or_refuse(data)
    if data == GOOD:
        assert parts is not None and parts.schema == SCHEMA and parts.preprocess == SPEC


@settings(FUZZ, max_examples=100)
@given(
    extra=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=12
    ),
    which=st.integers(0, len(artifact.MEMBERS)),
    size=st.sampled_from([artifact.MAX_MEMBER_BYTES + 1, 0xFFFFFFFF])
    | st.integers(artifact.MAX_MEMBER_BYTES + 1, 0xFFFFFFFF),
)
@example(extra="line\nbreak", which=len(artifact.MEMBERS), size=artifact.MAX_MEMBER_BYTES + 1)
def test_a_member_declared_over_the_limit_is_refused_before_it_is_read(extra, which, size):
    data = zip_of({**GOOD_MEMBERS, extra: b"{}"})
    headers = central_headers(data)
    huge = patched(data, headers[min(which, len(headers) - 1)] + 24, "<I", size)
    with pytest.raises(ContractError) as err:
        artifact.read(huge)
    one_line(str(err.value))
    assert f"is over {artifact.MAX_MEMBER_BYTES} bytes" in str(err.value)


@st.composite
def assembled(draw):
    """An artifact zip with members left out and JSON members replaced by hostile bytes."""
    members = dict(GOOD_MEMBERS)
    for name in draw(st.sets(st.sampled_from(artifact.MEMBERS), max_size=2)):
        del members[name]
    replaced = draw(st.sets(st.sampled_from(list(DOCS)), min_size=1))
    for name in sorted(replaced & members.keys()):
        members[name] = draw(member_bytes(name))
    return zip_of(members)


@settings(FUZZ, max_examples=600)
@given(assembled())
@example(zip_of({**GOOD_MEMBERS, "metadata.json": b"[" * 100_000}))
@example(zip_of({**GOOD_MEMBERS, "schema.json": b'{"a":' * 5000}))
@example(zip_of({**GOOD_MEMBERS, "metadata.json": b'{"format": "lockserve-model/2\\n"}'}))
@example(zip_of({**GOOD_MEMBERS, "schema.json": b"\xff\xfe{}"}))
def test_missing_or_hostile_members_give_an_artifact_or_one_contract_error(data):
    read_or_refuse(data)


@st.composite
def feature_documents(draw, name, texts):
    nullable = draw(st.booleans())
    if draw(st.booleans()):
        categories = draw(st.lists(texts, min_size=1, max_size=4, unique=True))
        return {"name": name, "type": "category", "nullable": nullable, "categories": categories}
    finite = {"allow_nan": False, "allow_infinity": False}
    low = draw(st.floats(max_value=1e300, **finite) | st.integers(-(2**64), 2**64))
    high = draw(st.floats(min_value=float(low), exclude_min=True, **finite))
    return {"name": name, "type": "number", "nullable": nullable, "min": low, "max": high}


@st.composite
def schema_docs(draw, texts):
    """A schema document the contract allows, its names and categories drawn from ``texts``."""
    names = draw(st.lists(texts.filter(bool), min_size=1, max_size=5, unique=True))
    doc = {
        "task": draw(st.sampled_from(TASKS)),
        "target": draw(texts.filter(lambda n: n and n not in names)),
        "features": [draw(feature_documents(name, texts)) for name in names],
    }
    if doc["task"] == "classification":
        labels = st.lists(texts, min_size=2, max_size=3, unique=True)
        doc["classes"] = draw(labels | st.lists(st.integers(), min_size=2, max_size=3, unique=True))
    if draw(st.booleans()):
        doc["max_missing_features"] = draw(st.integers(0, len(names)))
    return doc


@st.composite
def odd_features(draw):
    """A schema document the contract allows plus a feature with an odd name, one field off."""
    doc = draw(schema_docs(TEXT))
    name = draw(st.sampled_from(ODD_NAMES + ODDER_NAMES))
    doc["features"].append(draw(near(draw(feature_documents(name, TEXT)))))
    return doc


def schema_documents():
    return st.one_of(
        json_values(),
        near(SCHEMA.to_json()),
        schema_docs(TEXT),
        schema_docs(TEXT).flatmap(near),
        odd_features(),
        st.fixed_dictionaries(
            {"task": st.sampled_from(TASKS), "target": TEXT},
            optional={
                "features": st.lists(
                    st.fixed_dictionaries(
                        {"name": TEXT, "type": st.sampled_from(["number", "category"])},
                        optional={
                            "nullable": st.booleans() | hostile,
                            "min": numbers | hostile,
                            "max": numbers | hostile,
                            "categories": st.lists(TEXT, max_size=3) | hostile,
                        },
                    ),
                    max_size=3,
                ),
                "classes": st.lists(TEXT | st.integers(), max_size=3) | hostile,
                "max_missing_features": st.integers() | hostile,
            },
        ),
    )


@settings(FUZZ, max_examples=500)
@given(schema_documents())
@example({**SCHEMA.to_json(), "features": [{"name": "x", "type": "number", "min": 10**400}]})
@example({**SCHEMA.to_json(), "features": [{"name": "x\ny", "type": [[[]]]}]})
@example({**SCHEMA.to_json(), "target": "\ud800"})
@example({**SCHEMA.to_json(), "task": 10**5000})
def test_any_document_is_a_schema_that_round_trips_or_one_contract_error(doc):
    try:
        schema = Schema.from_json(doc)
    except ContractError as exc:
        one_line(str(exc))
        return
    assert Schema.from_json(schema.to_json()) == schema
    assert Schema.from_json(json.loads(json.dumps(schema.to_json()))) == schema
    assert artifact.read(artifact.pack(b"", schema, {}, {}, None)).schema == schema
    build(schema, 2)


@settings(FUZZ, max_examples=600)
@given(
    spec=st.one_of(
        json_values(),
        near(SPEC),
        near(SPEC, numbers),
        st.fixed_dictionaries(
            {
                "inputs": st.lists(TEXT, max_size=4) | hostile,
                "numeric": st.lists(
                    st.fixed_dictionaries({"name": TEXT | hostile, "fill": numbers | hostile}),
                    max_size=2,
                )
                | hostile,
                "categorical": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": TEXT | hostile,
                            "fill": TEXT | hostile,
                            "categories": st.lists(TEXT, max_size=3) | hostile,
                        }
                    ),
                    max_size=2,
                )
                | hostile,
            }
        ),
    ),
    names=st.just(SCHEMA.names) | st.lists(TEXT, max_size=3),
)
@example(spec={**SPEC, "numeric": [{"name": "mass (g)", "fill": 10**400}]}, names=SCHEMA.names)
@example(  # JSON nested as deep as json.loads allows can be too deep once the stack is deeper
    spec={**SPEC, "categorical": [{**SPEC["categorical"][0], "fill": deep_list(5000)}]},
    names=SCHEMA.names,
)
def test_any_preprocess_spec_builds_features_or_is_one_contract_error(spec, names):
    build_or_refuse(spec, names)


@st.composite
def schemas(draw):
    """A schema for the service: any names UTF-8 can carry, line breaks included."""
    return Schema.from_json(draw(schema_docs(SERVICE_TEXT)))


def core_of(schema, max_batch):
    """A real Core over the request model the service builds; nothing behind it runs."""
    request, _ = build(schema, max_batch)
    served = SimpleNamespace(
        artifact=SimpleNamespace(schema=schema), resolved=SimpleNamespace(name="fuzzed")
    )
    store = SimpleNamespace(get=lambda variant: served)
    return Core(store, SimpleNamespace(primary="a"), request, {})


def valid_value(feature):
    if feature.type == "category":
        return st.sampled_from(feature.categories)
    value = st.floats(feature.min, feature.max)
    low, high = math.ceil(feature.min), math.floor(feature.max)
    return value | st.integers(low, high) if low <= high else value


@st.composite
def valid_instances(draw, schema):
    """One instance the schema allows (nulls where nullable, at most max_missing_features of
    them), its keys in any order, and its values in schema order."""
    nullable = [i for i, f in enumerate(schema.features) if f.nullable]
    missing = draw(
        st.sets(st.sampled_from(nullable), max_size=schema.max_missing_features)
        if nullable
        else st.just(set())
    )
    values = tuple(
        None if i in missing else draw(valid_value(f)) for i, f in enumerate(schema.features)
    )
    order = draw(st.permutations(range(len(values))))
    instance = {schema.features[i].name: values[i] for i in order}
    return instance, tuple(
        None if v is None else v if isinstance(v, str) else float(v) for v in values
    )


@st.composite
def valid_requests(draw):
    schema = draw(schemas())
    max_batch = draw(st.integers(1, 4))
    pairs = draw(st.lists(valid_instances(schema), min_size=1, max_size=max_batch))
    return schema, max_batch, [p[0] for p in pairs], [p[1] for p in pairs]


def rows_or_refusal(call, schema, max_batch):
    """Rows the schema allows, or a ServiceError MALFORMED or INVALID in one line."""
    try:
        rows = call()
    except ServiceError as exc:
        assert exc.kind in (Kind.MALFORMED, Kind.INVALID)
        one_line(exc.message)
        return None
    assert 1 <= len(rows) <= max_batch
    for row in rows:
        assert len(row) == len(schema.features)
        for value, feature in zip(row, schema.features, strict=True):
            if value is None:
                assert feature.nullable
            elif feature.type == "category":
                assert value in feature.categories
            else:
                assert isinstance(value, float) and feature.min <= value <= feature.max
    return rows


@settings(FUZZ, max_examples=300)
@given(valid_requests(), st.booleans())
def test_every_valid_instance_is_accepted_with_values_in_schema_order(request, ascii_only):
    schema, max_batch, instances, expected = request
    core = core_of(schema, max_batch)
    body = json.dumps({"instances": instances}, ensure_ascii=ascii_only).encode()
    rows = core.rows(body)
    assert rows == expected
    assert [[repr(v) for v in row] for row in rows] == [[repr(v) for v in r] for r in expected]
    assert core.rows_of(instances) == expected


@st.composite
def hostile_requests(draw):
    """A schema, a batch limit, a body (bytes) and, when there is one, its Python instances."""
    request = draw(valid_requests())
    schema, max_batch, instances = request[:3]
    values = hostile_values(SERVICE_TEXT)
    doc = {"instances": instances}
    how = draw(
        st.sampled_from(["bytes", "json", "near", "damaged", "duplicate", "too many", "deep"])
    )
    if how == "bytes":
        return schema, max_batch, draw(st.binary(max_size=200)), None
    if how == "json":
        doc = draw(values)
    elif how == "near":
        doc = draw(near(doc, values, SERVICE_TEXT))
    elif how == "too many":
        doc = {"instances": instances * (max_batch + 1)}
    body = draw(encoded(st.just(doc)))
    if how == "damaged":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=4)) + body[at + draw(st.integers(0, 4)) :]
    elif how == "duplicate":
        key = json.dumps(schema.names[0]).encode()
        value = json.dumps(draw(values)).replace(json.dumps(MARKER), "NaN")
        body = body.replace(b"[{", b"[{" + key + b": " + value.encode() + b", ", 1)
    elif how == "deep":
        body = b'{"instances": ' + draw(st.integers(1, 20_000).flatmap(nested)).encode() + b"}"
    listed = doc.get("instances") if isinstance(doc, dict) else None
    return schema, max_batch, body, listed if isinstance(listed, list) else None


@settings(FUZZ, max_examples=500)
@given(hostile_requests())
@example((SCHEMA, 2, b"[" * 10_000, None))
@example((SCHEMA, 2, b'{"instances": []}', []))
@example(
    (SCHEMA, 2, b'{"instances": [{"island": "Dream", "mass (g)": 1' + b"0" * 400 + b"}]}", None)
)
@example((SCHEMA, 2, b'{"instances": [{"island": "Dream", "mass (g)": NaN}]}', None))
@example((SCHEMA, 2, b'{"instances": [{"island": "Dream", "mass (g)": -0.0}]}', None))
@example((SCHEMA, 2, b'{"instances": [{"island": "\xff", "mass (g)": null}]}', None))
@example((SCHEMA, 1, b'{"instances": [{"island": "Dream", "mass (g)": null}], "x": 1}', None))
def test_any_body_is_allowed_rows_or_one_line_malformed_or_invalid(request):
    schema, max_batch, body, instances = request
    core = core_of(schema, max_batch)
    rows_or_refusal(lambda: core.rows(body), schema, max_batch)
    if instances is not None:
        rows_or_refusal(lambda: core.rows_of(instances), schema, max_batch)


def test_a_name_with_a_line_break_still_gives_a_one_line_message():
    core = core_of(SCHEMA, 2)
    body = b'{"instances": [{"island": "Dream", "mass (g)": null, "a\\nb": 1}]}'
    with pytest.raises(ServiceError) as err:
        core.rows(body)
    one_line(err.value.message)
