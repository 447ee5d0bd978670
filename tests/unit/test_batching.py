"""Unit: the adaptive batcher groups concurrent requests and isolates a failing one."""

import asyncio

import numpy as np
import pytest

from api.batching import Batcher


def run(rows):
    if "poison" in rows:
        raise ValueError("poison row")
    return np.array([[float(r), 1.0 - float(r)] for r in rows])


def recording(sizes):
    """``run`` that also records each batch's size."""

    def spy(rows):
        sizes.append(len(rows))
        return run(rows)

    return spy


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    seen = []
    spy = recording(seen)

    async def main():
        batcher = Batcher(spy, max_size=64, max_latency_s=0.05)
        results = await asyncio.gather(*(batcher.submit([i / 10, i / 10]) for i in range(8)))
        return batcher, results

    batcher, results = asyncio.run(main())
    for i, proba in enumerate(results):
        np.testing.assert_allclose(proba[:, 0], [i / 10, i / 10])
    assert sum(seen) == 16 and max(seen) > 2
    assert batcher.stats.rows == 16 and batcher.stats.batches == len(seen)


def test_batch_never_exceeds_max_size_by_joining():
    sizes = []
    spy = recording(sizes)

    async def main():
        batcher = Batcher(spy, max_size=4, max_latency_s=0.05)
        await asyncio.gather(*(batcher.submit([0.5]) for _ in range(10)))

    asyncio.run(main())
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_failing_request_does_not_fail_its_batch_mates():
    sizes = []

    async def main():
        batcher = Batcher(recording(sizes), max_size=64, max_latency_s=0.05)
        jobs = [batcher.submit([0.1]), batcher.submit(["poison"]), batcher.submit([0.3])]
        return await asyncio.gather(*jobs, return_exceptions=True)

    good, bad, other = asyncio.run(main())
    np.testing.assert_allclose(good[:, 0], [0.1])
    np.testing.assert_allclose(other[:, 0], [0.3])
    assert isinstance(bad, ValueError)
    assert sizes == [3, 1, 1, 1]  # they were batch-mates; then each re-ran alone


@pytest.mark.parametrize("latency", [0.0, 0.001])
def test_a_lone_request_is_answered_without_waiting_for_company(latency):
    async def main():
        batcher = Batcher(run, max_size=64, max_latency_s=latency)
        return await asyncio.wait_for(batcher.submit([0.2]), timeout=1)

    np.testing.assert_allclose(asyncio.run(main())[:, 0], [0.2])


def test_multi_row_requests_never_push_a_batch_over_max_size():
    sizes = []
    spy = recording(sizes)

    async def main():
        batcher = Batcher(spy, max_size=4, max_latency_s=0.05)
        parts = [[0.1] * 3, [0.2] * 10, [0.3] * 2, [0.4] * 2, [0.5]]
        results = await asyncio.gather(*(batcher.submit(p) for p in parts))
        return parts, results

    parts, results = asyncio.run(main())
    for part, proba in zip(parts, results, strict=True):
        np.testing.assert_allclose(proba[:, 0], part)
    assert sum(sizes) == 18
    assert 10 in sizes  # a request is never split ...
    assert all(size <= 4 for size in sizes if size != 10)  # ... nor joined past the limit


def test_a_cancelled_request_does_not_stop_the_batcher():
    sizes = []

    async def main():
        batcher = Batcher(recording(sizes), max_size=64, max_latency_s=0.05)
        doomed = asyncio.ensure_future(batcher.submit([0.1]))
        await asyncio.sleep(0)
        doomed.cancel()
        first = await asyncio.wait_for(batcher.submit([0.2]), timeout=2)
        together = await asyncio.wait_for(
            asyncio.gather(batcher.submit([0.3]), batcher.submit([0.4])), timeout=2
        )
        return first, together

    first, (three, four) = asyncio.run(main())
    np.testing.assert_allclose(first[:, 0], [0.2])
    np.testing.assert_allclose([three[0, 0], four[0, 0]], [0.3, 0.4])
    assert sizes == [1, 2]  # the cancelled row was never computed; the next two shared a batch
