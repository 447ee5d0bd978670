"""In-process prediction cost (pytest-benchmark): each backend, one row and 1000 rows.

Run by `python -m bench.run`, which turns the timings into µs per row; not part of `make test`.
"""

import contextlib
import hashlib
from pathlib import Path

import pytest
import yaml

from api.artifact import load
from api.backends import OnnxBackend, SklearnBackend
from tests.conftest import PENGUIN

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifact():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    md5 = lock["stages"]["train"]["outs"][0]["md5"]
    data = (ROOT / "models/model.zip").read_bytes()
    assert hashlib.md5(data).hexdigest() == md5, "models/model.zip is not what dvc.lock pins"
    return load(data, md5)


@pytest.mark.parametrize("backend", [OnnxBackend, SklearnBackend], ids=["onnx", "sklearn"])
@pytest.mark.parametrize("rows", [1, 1000])
def test_predict(benchmark, artifact, backend, rows):
    predictor = backend(artifact)
    batch = [tuple(PENGUIN[name] for name in artifact.schema.names)] * rows
    result = benchmark(predictor.predict, batch)
    assert result.shape == (rows, 3)


@pytest.fixture(scope="module")
def app(artifact):
    """The default app (ONNX, fast path, JSON access log to /dev/null) on the pinned artifact."""
    import logging

    from api import logs
    from api.app import create_app
    from api.resolver import Resolved
    from api.settings import Settings
    from api.store import ModelStore, load_model

    logs.configure("INFO")
    logging.getLogger().handlers[0].setStream(open("/dev/null", "w"))  # noqa: SIM115
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    md5 = lock["stages"]["train"]["outs"][0]["md5"]
    data = (ROOT / "models/model.zip").read_bytes()
    resolved = Resolved(
        "penguin-classifier", "models/model.zip", md5, "HEAD", "0" * 40, "workspace", data
    )
    return create_app(Settings(), ModelStore({"default": load_model("default", resolved)}))


def test_hot_path_validate(benchmark, app):
    """One pydantic-core pass over the request bytes."""
    import json

    body = json.dumps({"instances": [PENGUIN]}).encode()
    benchmark(app.state.core.rows, body)


@contextlib.contextmanager
def as_served():
    """The root logger with only the service's JSON handler, as in a server (pytest adds its
    own capture handlers while a test runs, which would send the access log down its slower
    general path)."""
    import logging

    from api import logs

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers[:] = [logs.HANDLER]
    try:
        yield
    finally:
        root.handlers[:] = kept


def test_hot_path_access_log_1000_lines(benchmark, app):
    """A thousand JSON access lines as the service writes them (the app's set-up sends logs to
    /dev/null): kept during a loop turn, written at its end."""
    import asyncio

    from api.middleware import access

    fields = {
        "request_id": "0" * 32,
        "method": "POST",
        "path": "/predict",
        "status": 200,
        "latency_ms": 0.1,
        "batch_size": 1,
        "variant": "default",
        "model_md5": "0" * 32,
    }

    async def lines():
        for _ in range(1000):
            access.info("POST /predict 200", fields)
        await asyncio.sleep(0)  # the turn ends: the lines are written

    loop = asyncio.new_event_loop()
    with as_served():
        assert access._direct() is not None
        benchmark(lambda: loop.run_until_complete(lines()))
    loop.close()
    assert not access._lines


def test_hot_path_whole_request(benchmark, app):
    """A single-row POST /predict through the whole ASGI app, without a socket."""
    import asyncio
    import json

    body = json.dumps({"instances": [PENGUIN]}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    loop = asyncio.new_event_loop()
    with as_served():
        benchmark(lambda: loop.run_until_complete(app(dict(scope), receive, send)))
    loop.close()
    assert sent[0]["status"] == 200
