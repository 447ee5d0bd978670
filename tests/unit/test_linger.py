"""Unit: the bounded lingering read after an early refusal (api.middleware.linger)."""

import asyncio
import time

from api.middleware import linger


def chunks(n: int, size: int = 1000, pause: float = 0.0):
    sent = 0

    async def receive():
        nonlocal sent
        if pause:
            await asyncio.sleep(pause)
        sent += 1
        return {"type": "http.request", "body": b"x" * size, "more_body": sent < n}

    return receive


def test_it_reads_the_rest_of_the_body_and_stops_at_its_end():
    assert asyncio.run(linger(chunks(7))) == 7000


def test_it_stops_after_the_byte_bound():
    assert asyncio.run(linger(chunks(10**6), max_bytes=10_500)) == 11_000


def test_it_stops_after_the_time_bound():
    started = time.monotonic()
    discarded = asyncio.run(linger(chunks(10**6, pause=0.05), max_s=0.3))
    assert 0.25 < time.monotonic() - started < 2 and 3000 <= discarded <= 7000


def test_it_stops_when_the_client_goes():
    async def gone():
        return {"type": "http.disconnect"}

    assert asyncio.run(linger(gone)) == 0
