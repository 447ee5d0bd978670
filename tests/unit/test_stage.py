"""Unit: what every stage shares: its params section, one clear line on failure, and
all-or-nothing writes."""

import builtins
import hashlib
import io
import json
import logging
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from src import stage
from src.stage import (
    StageError,
    load_params,
    main_wrapper,
    md5_file,
    parquet_bytes,
    read_schema,
    write_outputs,
)


def params_file(tmp_path, text: str | bytes):
    path = tmp_path / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_stage_gets_only_its_own_section(tmp_path):
    path = params_file(tmp_path, "prepare:\n  seed: 1\ntrain:\n  estimator: ridge\n")
    assert load_params("prepare", path) == {"seed": 1}
    assert load_params("train", path) == {"estimator": "ridge"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "prepare:\n  seed: [1, 2\n",
            "not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            "prepare:\n\tseed: 1\n",
            "not valid YAML at line 2, column 1: found character '\\t' that cannot start any token",
        ),
        ("prepare:\n  seed: 1\n  name: \x07\n", "not valid YAML: ReaderError"),
        ("", "no 'prepare' section"),
        ("- prepare\n- train\n", "no 'prepare' section"),
        ("train: {seed: 1}\n", "no 'prepare' section"),
        ("prepare: 3\n", "'prepare' must map names to values, got 3"),
    ],
    ids=["unclosed", "tab", "control-character", "empty", "list", "other-section", "scalar"],
)
def test_bad_params_are_one_line_naming_file_and_place(tmp_path, text, message):
    path = params_file(tmp_path, text)
    with pytest.raises(StageError) as err:
        load_params("prepare", path)
    assert str(err.value) == f"{path}: {message}"


def test_a_long_value_in_place_of_a_section_is_cut_short(tmp_path):
    path = params_file(tmp_path, "prepare: " + "x" * 200 + "\n")
    with pytest.raises(StageError) as err:
        load_params("prepare", path)
    assert str(err.value) == f"{path}: 'prepare' must map names to values, got '{'x' * 79}"


def test_params_that_are_not_utf8_name_the_byte(tmp_path):
    path = params_file(tmp_path, "prepare:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(StageError) as err:
        load_params("prepare", path)
    assert str(err.value) == f"{path}: not UTF-8 text (invalid continuation byte at byte 20)"


def test_params_are_read_as_utf8_whatever_the_platform_default(tmp_path, monkeypatch):
    path = params_file(tmp_path, "prepare:\n  name: Längd\n")

    def latin1_by_default(file, mode="r", *args, encoding=None, **kwargs):
        """open() as on a platform whose default text encoding is Latin-1."""
        if "b" not in mode and encoding is None:
            encoding = "latin-1"
        return builtins.open(file, mode, *args, encoding=encoding, **kwargs)

    monkeypatch.setattr(stage, "open", latin1_by_default, raising=False)
    assert load_params("prepare", path) == {"name": "Längd"}


def test_read_schema_names_a_missing_or_broken_file(tmp_path):
    missing = tmp_path / "schema.json"
    with pytest.raises(StageError) as err:
        read_schema(missing)
    assert str(err.value) == f"{missing}: no such file (run the prepare stage)"
    missing.write_text("{not json")
    with pytest.raises(StageError, match=f"^{missing}: "):
        read_schema(missing)
    missing.write_text(json.dumps({"task": "classification"}))
    with pytest.raises(StageError, match=f"^{missing}: "):
        read_schema(missing)


def test_md5_file_is_the_md5_of_the_whole_file(tmp_path):
    data = os.urandom((1 << 20) * 2 + 123)  # more than one read block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert md5_file(path) == hashlib.md5(data).hexdigest()
    path.write_bytes(b"")
    assert md5_file(path) == hashlib.md5(b"").hexdigest()


def test_parquet_bytes_drop_the_index_and_repeat_exactly():
    frame = pd.DataFrame({"a": [1.5, 2.5], "b": ["x", None]}, index=[7, 3])
    data = parquet_bytes(frame)
    assert data == parquet_bytes(frame.copy())
    back = pd.read_parquet(io.BytesIO(data))
    assert list(back.columns) == ["a", "b"] and back.index.tolist() == [0, 1]
    assert back["a"].tolist() == [1.5, 2.5]
    assert back["b"].iloc[0] == "x" and back["b"].isna().tolist() == [False, True]


def test_write_outputs_writes_every_file_world_readable(tmp_path):
    outputs = {tmp_path / "a" / "one.bin": b"1", tmp_path / "b" / "c" / "two.bin": b"22"}
    write_outputs(outputs)
    for path, data in outputs.items():
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["one.bin", "two.bin"]


def test_write_outputs_is_all_or_nothing(tmp_path):
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    write_outputs({first: b"old", second: b"old"})
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory would go")
    with pytest.raises(OSError):
        write_outputs({first: b"new", second: b"new", blocked / "third.bin": b"new"})
    assert first.read_bytes() == second.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "first.bin", "second.bin"]


def test_a_full_disk_names_the_output_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno
    import io

    first, second = tmp_path / "first.bin", tmp_path / "models" / "second.bin"
    write_outputs({first: b"old"})

    class Full(io.FileIO):
        def write(self, data):
            if data == b"too big":
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(stage.os, "fdopen", lambda fd, mode: Full(fd, "wb"))
    with pytest.raises(OSError) as full:
        write_outputs({first: b"new", second: b"too big"})
    assert (full.value.errno, full.value.filename) == (errno.ENOSPC, str(second))
    assert first.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["first.bin", "models"]


def test_each_output_is_staged_beside_its_target_as_a_hidden_temp_file(tmp_path, monkeypatch):
    """Renaming within one directory is atomic (never across file systems), and a file left by
    a killed stage is a dotfile named after its target."""
    renamed = []
    replace = os.replace
    monkeypatch.setattr(stage.os, "replace", lambda a, b: (renamed.append((a, b)), replace(a, b)))
    target = tmp_path / "models" / "model.zip"
    write_outputs({target: b"zip"})
    ((staged, final),) = renamed
    staged = Path(staged)
    assert Path(final) == target and staged.parent == target.parent
    assert staged.name.startswith(".model.zip.") and staged.name.endswith(".tmp")


def test_write_outputs_logs_each_file_with_its_md5(tmp_path, caplog):
    path = tmp_path / "out.bin"
    with caplog.at_level(logging.INFO, logger="lockserve.pipeline"):
        write_outputs({path: b"abc"})
    assert f"wrote {path} (3 bytes, md5 {hashlib.md5(b'abc').hexdigest()})" in caplog.messages


def test_a_stage_that_succeeds_runs_once_and_logs_its_time(caplog):
    calls = []
    with caplog.at_level(logging.INFO, logger="lockserve.pipeline"):
        main_wrapper("prepare", lambda: calls.append(1))
    assert calls == [1]
    assert any(m.startswith("prepare done in ") and "peak RSS" in m for m in caplog.messages)


def test_bad_input_exits_1_with_one_line_naming_the_stage(caplog):
    def run():
        raise StageError("column 'x'  is\n  missing")

    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.INFO):
        main_wrapper("prepare", run)
    assert exit_.value.code == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [
        ("lockserve.pipeline", "prepare failed: column 'x' is missing")
    ]


def test_an_unexpected_error_is_one_line_naming_its_type(caplog, monkeypatch):
    monkeypatch.delenv("LOCKSERVE_DEBUG", raising=False)
    text = "disk\n  full:  " + "y " * 400

    def run():
        raise OSError(text)

    with pytest.raises(SystemExit) as exit_, caplog.at_level(logging.INFO):
        main_wrapper("train", run)
    assert exit_.value.code == 1
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    detail = ("disk full: " + "y " * 400)[:500]
    assert error.getMessage() == (
        f"train failed unexpectedly (OSError: {detail}); LOCKSERVE_DEBUG=1 shows the traceback"
    )
    assert error.name == "lockserve.pipeline"


def test_lockserve_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("LOCKSERVE_DEBUG", "1")

    def run():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        main_wrapper("train", run)


def test_stage_logs_are_info_lines_with_time_level_and_logger(capsys, monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    stage.setup_logging()
    try:
        logging.getLogger("lockserve.pipeline").info("prepare: hello")
        logging.getLogger("lockserve.pipeline").debug("not shown")
    finally:
        for handler in root.handlers:
            handler.flush()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].endswith(" INFO lockserve.pipeline: prepare: hello")
    date, clock = err[0].split(" ")[:2]
    assert len(date) == 10 and date[4] == date[7] == "-" and clock.count(":") == 2
