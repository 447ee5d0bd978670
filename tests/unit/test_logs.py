"""Unit: every log line is one JSON object, DVC's warnings included (api/logs.py)."""

import json
import logging
import sys

from api import logs


def test_dvcs_loggers_write_json_through_the_one_handler(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        import dvc  # noqa: F401 - imported before, as in a process that resolved a model

        logging.getLogger("dvc").setLevel(logging.ERROR)  # as a CLI run in-process leaves it
        logs.configure("INFO")
        logging.getLogger("dvc").warning("failed to collect %s", "x")
        logging.getLogger("dvc_data.index").warning("and this")
        logging.getLogger("lockserve").info("ours", extra={logs.FIELDS: {"k": 1}})
        sys.stderr.flush()
        captured = capsys.readouterr()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err, out = captured.err, captured.out
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("dvc", "failed to collect x"),
        ("dvc_data.index", "and this"),
        ("lockserve", "ours"),
    ]
    assert lines[2]["k"] == 1 and out == ""
    for name in ("dvc", "dvc_objects", "dvc_data"):
        assert logging.getLogger(name).handlers == []
