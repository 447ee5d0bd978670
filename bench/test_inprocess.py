"""In-process prediction cost (pytest-benchmark): each backend, one row and 1000 rows.

Run by `python -m bench.run`, which turns the timings into µs per row; not part of `make test`.
"""

import pytest

from api.artifact import load
from api.backends import OnnxBackend, SklearnBackend
from bench import profile, run
from tests.conftest import PENGUIN, json_handler_only


@pytest.fixture(scope="module")
def pinned():
    return run.pinned()


@pytest.fixture(scope="module")
def artifact(pinned):
    return load(pinned.data, pinned.md5)  # the md5 dvc.lock pins, checked


@pytest.mark.parametrize("backend", [OnnxBackend, SklearnBackend], ids=["onnx", "sklearn"])
@pytest.mark.parametrize("rows", [1, 1000])
def test_predict(benchmark, artifact, backend, rows):
    predictor = backend(artifact)
    batch = [tuple(PENGUIN[name] for name in artifact.schema.names)] * rows
    result = benchmark(predictor.predict, batch)
    assert result.shape == (rows, 3)


@pytest.fixture(scope="module")
def app(pinned):
    """The default app (ONNX, fast path, JSON access log to /dev/null) on the pinned artifact."""
    return run.in_process_app(pinned)


def test_hot_path_validate(benchmark, app):
    """One pydantic-core pass over the request bytes."""
    import json

    body = json.dumps({"instances": [PENGUIN]}).encode()
    benchmark(app.state.core.rows, body)


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
    with json_handler_only():  # as served: pytest's capture handlers out
        assert access._direct() is not None
        benchmark(lambda: loop.run_until_complete(lines()))
    loop.close()
    assert not access._lines


def test_hot_path_whole_request(benchmark, app):
    """A single-row POST /predict through the whole ASGI app, without a socket."""
    import json

    post = profile.Post(app, json.dumps({"instances": [PENGUIN]}).encode())
    with json_handler_only():
        benchmark(post)
    post.close()
    assert post.sent[0]["status"] == 200
