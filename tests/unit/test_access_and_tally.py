"""Unit: the access log's hot path writes the lines the JSON handler would (api/logs.py
AccessLog), and request metrics added up between writes equal one observation a request
(api/metrics.py RequestTally)."""

import asyncio
import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from api import logs, metrics
from tests.conftest import json_handler_only

FIELDS = {"request_id": "r1", "status": 200, "latency_ms": 1.5, "variant": None}


@pytest.fixture
def served():
    """The root logger as logs.configure leaves it, writing to a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("INFO")
    stream = io.StringIO()
    logs.HANDLER.setStream(stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_kept_in_a_turn_are_written_after_it_as_the_handler_writes_them(served):
    access = logs.AccessLog(logging.getLogger("lockserve.access"))

    async def turn() -> int:
        access.info("POST /predict 200", FIELDS)
        access.info("GET /model 200", {**FIELDS, "request_id": "r2"})
        kept = len(served.getvalue())
        await asyncio.sleep(0)  # the turn ends
        return kept

    with json_handler_only():
        assert asyncio.run(turn()) == 0  # nothing written before the turn ended
    fast = lines(served)
    assert [line["msg"] for line in fast] == ["POST /predict 200", "GET /model 200"]

    with json_handler_only():
        logging.getLogger("lockserve.access").info(
            "%s", "POST /predict 200", extra={logs.FIELDS: FIELDS}
        )
    record = lines(served)[-1]
    assert set(record) == set(fast[0])  # the same keys as a record's line...
    for key in ("level", "logger", "msg", "request_id", "status", "latency_ms", "variant"):
        assert record[key] == fast[0][key]  # ...and the same values but the time


def test_any_other_handler_or_filter_gets_records(served, caplog):
    access = logs.AccessLog(logging.getLogger("lockserve.access"))

    async def turn() -> None:
        access.info("POST /predict 200", FIELDS)
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="lockserve.access"):
        asyncio.run(turn())  # pytest's capture handler is on the root: a record
    assert [r.fields for r in caplog.records] == [FIELDS]

    logger = logging.getLogger("lockserve.access")
    logger.addFilter(lambda record: False)
    try:
        with json_handler_only():
            assert access._direct() is None
            asyncio.run(turn())  # a filter on the way: a record, which it drops
    finally:
        logger.filters.clear()
    assert len(lines(served)) == 1  # only the caplog turn's record reached the handler


def test_a_logger_above_info_writes_nothing(served):
    logger = logging.getLogger("lockserve.access")
    logger.setLevel(logging.WARNING)
    access = logs.AccessLog(logger)

    async def turn() -> None:
        access.info("x", FIELDS)
        await asyncio.sleep(0)

    try:
        with json_handler_only():
            asyncio.run(turn())
    finally:
        logger.setLevel(logging.NOTSET)
    assert served.getvalue() == ""


def test_without_a_running_loop_a_line_is_a_record(served):
    with json_handler_only():
        logs.AccessLog(logging.getLogger("lockserve.access")).info("x 200", FIELDS)
    assert lines(served)[0]["msg"] == "x 200"


LATENCIES = [0.0005, 0.001, 0.0011, 0.003, 0.02, 0.02, 0.3, 2.0, 2.5, 9.0]


def exposition(use_tally: bool, monkeypatch) -> str:
    registry = CollectorRegistry()
    requests = Counter("r", "r", ["path", "variant", "status"], registry=registry)
    latency = Histogram(
        "s", "s", ["path", "variant", "status"], buckets=metrics.LATENCY_BUCKETS, registry=registry
    )
    labels = [("/predict", "a", "200"), ("/predict", "b", "422")]
    if use_tally:
        monkeypatch.setattr(metrics, "REQUESTS", requests)
        monkeypatch.setattr(metrics, "LATENCY", latency)
        tally = metrics.RequestTally()
        for i, seconds in enumerate(LATENCIES):
            tally.add(labels[i % 2], seconds)  # no running loop: written at once

        async def kept() -> None:
            for i, seconds in enumerate(LATENCIES):
                tally.add(labels[i % 2], seconds)  # a write is due later: added up
            tally.flush()

        asyncio.run(kept())
    else:
        for _ in range(2):
            for i, seconds in enumerate(LATENCIES):
                requests.labels(*labels[i % 2]).inc()
                latency.labels(*labels[i % 2]).observe(seconds)
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def test_tallied_requests_equal_one_observation_each(monkeypatch):
    assert exposition(True, monkeypatch) == exposition(False, monkeypatch)


def test_a_tally_is_written_a_moment_after_the_first_request(monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_S", 0.01)
    tally = metrics.RequestTally()
    key = ("/tally-test", "v", "200")
    before = metrics.REQUESTS.labels(*key)._value.get()

    async def run() -> tuple[float, float]:
        tally.add(key, 0.001)
        tally.add(key, 0.002)
        kept = metrics.REQUESTS.labels(*key)._value.get()
        await asyncio.sleep(0.05)
        return kept, metrics.REQUESTS.labels(*key)._value.get()

    kept, written = asyncio.run(run())
    assert (kept - before, written - before) == (0, 2)


def test_a_write_due_on_a_loop_that_has_gone_is_scheduled_on_the_next(monkeypatch):
    monkeypatch.setattr(metrics, "FLUSH_S", 0.01)
    tally = metrics.RequestTally()
    key = ("/tally-test-2", "v", "200")
    before = metrics.REQUESTS.labels(*key)._value.get()

    async def one() -> None:
        tally.add(key, 0.001)

    asyncio.run(one())  # its loop closes before the write is due: the timer goes with it

    async def another() -> None:
        tally.add(key, 0.001)
        await asyncio.sleep(0.05)

    asyncio.run(another())
    assert metrics.REQUESTS.labels(*key)._value.get() - before == 2


class Writes(io.StringIO):
    """A stream that keeps each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_turns_lines_are_written_whole_at_most_pipe_buf_bytes_a_write(served):
    import select

    stream = Writes()
    logs.HANDLER.setStream(stream)
    access = logs.AccessLog(logging.getLogger("lockserve.access"))
    fields = {**FIELDS, "pad": "é" * 100}  # multi-byte: the limit is in bytes

    async def turn() -> None:
        for i in range(100):
            access.info(f"POST /predict 200 #{i}", fields)
        await asyncio.sleep(0)

    with json_handler_only():
        asyncio.run(turn())
    assert len(stream.writes) > 1
    for text in stream.writes:
        assert len(text.encode()) <= select.PIPE_BUF and text.endswith("\n")
    assert [line["msg"] for line in lines(stream)] == [
        f"POST /predict 200 #{i}" for i in range(100)
    ]


def test_a_stream_that_fails_is_reported_not_raised(served, capsys):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("gone")

    logs.HANDLER.setStream(Broken())
    access = logs.AccessLog(logging.getLogger("lockserve.access"))

    async def turn() -> None:
        access.info("POST /predict 200", FIELDS)
        await asyncio.sleep(0)

    with json_handler_only():
        asyncio.run(turn())  # no exception reaches the loop or the caller
    assert "BrokenPipeError" in capsys.readouterr().err  # logging's own report
