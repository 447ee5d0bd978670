"""Unit: a bundle (api.bundle) keeps what the lock pinned and refuses bytes that changed."""

import json

import pytest

from api import bundle
from api.resolver import ResolutionError, Resolved, md5_hex

DATA = b"PK\x03\x04 not really a model, but bytes with an md5"


def resolved(data: bytes = DATA) -> Resolved:
    return Resolved(
        "penguin-classifier",
        "models/model.zip",
        md5_hex(data),
        "v1",
        "a" * 40,
        "remote",
        data,
        {"reports/metrics.json": {"accuracy": 0.9}},
    )


def test_read_gives_back_what_was_written(tmp_path):
    bundle.write(tmp_path, resolved())
    got = bundle.read(tmp_path, md5_hex(DATA))
    assert got.data == DATA and got.md5 == md5_hex(DATA) and got.source == "bundle"
    assert (got.name, got.path, got.rev, got.commit) == (
        "penguin-classifier",
        "models/model.zip",
        "v1",
        "a" * 40,
    )
    assert got.metrics == {"reports/metrics.json": {"accuracy": 0.9}}
    assert set(got.timings_ms) == {"verify_ms", "resolve_ms"}
    assert bundle.read(tmp_path).data == DATA  # no expected md5: the manifest's own


def test_a_changed_model_file_is_refused(tmp_path):
    bundle.write(tmp_path, resolved())
    changed = DATA[:-1] + b"!"
    (tmp_path / "model.zip").write_bytes(changed)
    with pytest.raises(ResolutionError) as err:
        bundle.read(tmp_path)
    message = str(err.value)
    assert f"has md5 {md5_hex(changed)}" in message
    assert f"dvc.lock at v1 (aaaaaaaaaaaa) pinned {md5_hex(DATA)}" in message


def test_a_manifest_for_another_model_is_refused(tmp_path):
    """Both file and manifest replaced consistently: the md5 the artifact was built for wins."""
    other = b"another model"
    bundle.write(tmp_path, resolved(other))
    with pytest.raises(
        ResolutionError,
        match=f"names md5 {md5_hex(other)}, this artifact was "
        f"built for {md5_hex(DATA)} \\(LOCKSERVE_BUNDLE_MD5\\)",
    ):
        bundle.read(tmp_path, md5_hex(DATA))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: None, "no such file"),
        (lambda m: "{not json", "unreadable"),
        (lambda m: {**m, "format": 2}, "not a bundle of format 1"),
        (lambda m: "7", "not a bundle of format 1"),
        (lambda m: {k: v for k, v in m.items() if k != "md5"}, "missing md5"),
    ],
)
def test_a_bad_manifest_is_named(tmp_path, change, message):
    where = bundle.write(tmp_path, resolved())
    new = change(json.loads(where.read_text()))
    if new is None:
        where.unlink()
    else:
        where.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(ResolutionError, match=message):
        bundle.read(tmp_path)


def test_a_missing_model_file_is_named(tmp_path):
    bundle.write(tmp_path, resolved())
    (tmp_path / "model.zip").unlink()
    with pytest.raises(ResolutionError, match="model.zip: cannot be read"):
        bundle.read(tmp_path)
