"""Unit: the adaptive batcher groups concurrent requests, isolates a failing one, keeps its
collection window (who joins a batch and who waits for the next), reports its batches, and
runs only between start and stop."""

import asyncio
import logging
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.batching import Batcher, BatchStats
from api.problems import Kind, ServiceError


async def started(batcher: Batcher) -> Batcher:
    await batcher.start()
    return batcher


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
        batcher = await started(Batcher(spy, max_size=64, max_latency_s=0.05))
        results = await asyncio.gather(*(batcher.run([i / 10, i / 10]) for i in range(8)))
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
        batcher = await started(Batcher(spy, max_size=4, max_latency_s=0.05))
        await asyncio.gather(*(batcher.run([0.5]) for _ in range(10)))

    asyncio.run(main())
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_failing_request_does_not_fail_its_batch_mates():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=64, max_latency_s=0.05))
        jobs = [batcher.run([0.1]), batcher.run(["poison"]), batcher.run([0.3])]
        return await asyncio.gather(*jobs, return_exceptions=True)

    good, bad, other = asyncio.run(main())
    np.testing.assert_allclose(good[:, 0], [0.1])
    np.testing.assert_allclose(other[:, 0], [0.3])
    assert isinstance(bad, ValueError)
    assert sizes == [3, 1, 1, 1]  # they were batch-mates; then each re-ran alone


@pytest.mark.parametrize("latency", [0.0, 0.001])
def test_a_lone_request_is_answered_without_waiting_for_company(latency):
    async def main():
        batcher = await started(Batcher(run, max_size=64, max_latency_s=latency))
        return await asyncio.wait_for(batcher.run([0.2]), timeout=1)

    np.testing.assert_allclose(asyncio.run(main())[:, 0], [0.2])


def test_multi_row_requests_never_push_a_batch_over_max_size():
    sizes = []
    spy = recording(sizes)

    async def main():
        batcher = await started(Batcher(spy, max_size=4, max_latency_s=0.05))
        parts = [[0.1] * 3, [0.2] * 10, [0.3] * 2, [0.4] * 2, [0.5]]
        results = await asyncio.gather(*(batcher.run(p) for p in parts))
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
        batcher = await started(Batcher(recording(sizes), max_size=64, max_latency_s=0.05))
        doomed = asyncio.ensure_future(batcher.run([0.1]))
        await asyncio.sleep(0)
        doomed.cancel()
        first = await asyncio.wait_for(batcher.run([0.2]), timeout=2)
        together = await asyncio.wait_for(
            asyncio.gather(batcher.run([0.3]), batcher.run([0.4])), timeout=2
        )
        return first, together

    first, (three, four) = asyncio.run(main())
    np.testing.assert_allclose(first[:, 0], [0.2])
    np.testing.assert_allclose([three[0, 0], four[0, 0]], [0.3, 0.4])
    assert sizes == [1, 2]  # the cancelled row was never computed; the next two shared a batch


def answered(result, rows):
    np.testing.assert_allclose(result[:, 0], rows)


def test_a_request_arriving_within_the_window_joins_the_batch():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=64, max_latency_s=0.5))
        first = asyncio.ensure_future(batcher.run([0.1, 0.2]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.run([0.3]))
        return await asyncio.wait_for(asyncio.gather(first, second), timeout=3)

    first, second = asyncio.run(main())
    answered(first, [0.1, 0.2])
    answered(second, [0.3])
    assert sizes == [3]


def test_a_request_after_the_window_gets_a_batch_of_its_own():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=64, max_latency_s=0.02))
        first = await asyncio.wait_for(batcher.run([0.1]), timeout=2)
        await asyncio.sleep(0.1)
        second = await asyncio.wait_for(batcher.run([0.2]), timeout=2)
        return first, second

    first, second = asyncio.run(main())
    answered(first, [0.1])
    answered(second, [0.2])
    assert sizes == [1, 1]


def test_a_lone_request_waits_out_the_window_for_company_no_longer():
    async def main():
        batcher = await started(Batcher(run, max_size=64, max_latency_s=0.2))
        began = time.perf_counter()
        result = await asyncio.wait_for(batcher.run([0.4]), timeout=3)
        return result, time.perf_counter() - began

    result, elapsed = asyncio.run(main())
    answered(result, [0.4])
    assert 0.15 <= elapsed < 1.5


@pytest.mark.parametrize("rows", [[0.1, 0.2], [0.1, 0.2, 0.3]])
def test_a_full_batch_runs_at_once_without_waiting_out_the_window(rows):
    async def main():
        batcher = await started(Batcher(run, max_size=2, max_latency_s=5.0))
        began = time.perf_counter()
        result = await asyncio.wait_for(batcher.run(rows), timeout=3)
        return result, time.perf_counter() - began

    result, elapsed = asyncio.run(main())
    answered(result, rows)
    assert elapsed < 1.0


def test_a_request_that_would_overflow_waits_for_the_next_batch():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=3, max_latency_s=0.3))
        first = asyncio.ensure_future(batcher.run([0.1, 0.2]))
        await asyncio.sleep(0.02)
        too_big = asyncio.ensure_future(batcher.run([0.3, 0.4]))
        await asyncio.sleep(0.02)
        fits = asyncio.ensure_future(batcher.run([0.5]))
        return await asyncio.wait_for(asyncio.gather(first, too_big, fits), timeout=3)

    first, too_big, fits = asyncio.run(main())
    answered(first, [0.1, 0.2])
    answered(too_big, [0.3, 0.4])
    answered(fits, [0.5])
    # the pair that did not fit is held over and starts the next batch, where the last fits
    assert sizes == [2, 3]


def test_a_batch_of_cancelled_requests_only_does_not_stall_the_next():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=1, max_latency_s=0.2))
        doomed = asyncio.ensure_future(batcher.run([0.1]))
        waiting = asyncio.ensure_future(batcher.run([0.2]))
        await asyncio.sleep(0)  # both queued; the batcher has not looked yet
        doomed.cancel()
        return await asyncio.wait_for(waiting, timeout=2)

    answered(asyncio.run(main()), [0.2])
    assert sizes == [1]  # the cancelled row was never computed


def test_requests_waiting_behind_a_failed_batch_are_still_answered():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=2, max_latency_s=0.05))
        jobs = [batcher.run(["poison"]), batcher.run([0.1]), batcher.run([0.3])]
        return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout=3)

    bad, good, later = asyncio.run(main())
    assert isinstance(bad, ValueError)
    answered(good, [0.1])
    answered(later, [0.3])  # held over while the first batch failed and was re-run
    assert sizes == [2, 1, 1, 1]


def test_the_batcher_answers_only_between_start_and_stop():
    async def main():
        batcher = Batcher(run, max_size=8, max_latency_s=0.01)
        tasks = len(asyncio.all_tasks())
        with pytest.raises(ServiceError) as before:
            await batcher.run([0.1])
        assert len(asyncio.all_tasks()) == tasks  # a request starts nothing
        await batcher.start()
        first = await asyncio.wait_for(batcher.run([0.1]), timeout=2)
        await batcher.stop()
        with pytest.raises(ServiceError) as after:
            await batcher.run([0.2])
        await batcher.start()  # a reloaded app starts it again
        second = await asyncio.wait_for(batcher.run([0.2]), timeout=2)
        batcher._task.cancel()  # a loop that died is never waited on forever
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as dead:
            await batcher.run([0.3])
        return first, second, before.value, after.value, dead.value

    first, second, *refusals = asyncio.run(main())
    answered(first, [0.1])
    answered(second, [0.2])
    assert [(e.kind, e.message) for e in refusals] == [
        (Kind.UNAVAILABLE, "the model's batcher is not running")
    ] * 3


def test_stop_refuses_the_requests_still_waiting():
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=1, max_latency_s=5.0))
        gate = asyncio.Event()
        slow = batcher._run

        def blocked(rows):
            while not gate.is_set():
                time.sleep(0.01)
            return slow(rows)

        batcher._run = blocked
        running = asyncio.ensure_future(batcher.run([0.1]))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(batcher.run([x])) for x in (0.2, 0.3)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        return await asyncio.gather(running, *waiting, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ServiceError) for r in results)  # computing, then waiting
    assert [r.message for r in results] == ["the server is stopping"] * 3


def test_a_failed_batch_is_logged_and_each_request_rerun_alone(caplog):
    sizes = []

    async def main():
        batcher = await started(Batcher(recording(sizes), max_size=64, max_latency_s=0.05))
        jobs = [batcher.run([0.1, 0.2]), batcher.run(["poison"]), batcher.run([0.3])]
        return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout=3)

    with caplog.at_level(logging.ERROR, logger="lockserve.batching"):
        good, bad, other = asyncio.run(main())
    answered(good, [0.1, 0.2])
    answered(other, [0.3])
    assert isinstance(bad, ValueError) and str(bad) == "poison row"
    assert sizes == [4, 2, 1, 1]
    (record,) = caplog.records
    assert record.getMessage() == "batch of 4 rows failed; re-running its 3 requests one by one"
    assert record.exc_info and record.exc_info[0] is ValueError


def histogram(name: str) -> tuple[float, float]:
    labels = {"variant": name}
    count = REGISTRY.get_sample_value("lockserve_batch_rows_count", labels) or 0.0
    total = REGISTRY.get_sample_value("lockserve_batch_rows_sum", labels) or 0.0
    return count, total


def test_stats_and_metrics_count_batches_rows_and_the_largest():
    sizes = []

    async def main(batcher):
        await batcher.start()
        for parts in ([[0.1], [0.2], [0.3]], [[0.4] * 5], [[0.5], [0.6]]):
            await asyncio.wait_for(asyncio.gather(*(batcher.run(p) for p in parts)), timeout=3)

    before = histogram("stats-test")
    batcher = Batcher(recording(sizes), max_size=64, max_latency_s=0.01, name="stats-test")
    assert batcher.stats.as_dict() == {"batches": 0, "rows": 0, "largest": 0, "mean_size": 0.0}
    asyncio.run(main(batcher))
    assert sizes == [3, 5, 2]
    assert batcher.stats.as_dict() == {"batches": 3, "rows": 10, "largest": 5, "mean_size": 3.33}
    count, total = histogram("stats-test")
    assert (count - before[0], total - before[1]) == (3, 10)


@pytest.mark.parametrize(
    ("stats", "mean"),
    [(BatchStats(), 0.0), (BatchStats(2, 3, 2), 1.5), (BatchStats(3, 2, 1), 0.67)],
)
def test_mean_batch_size_is_rows_over_batches_rounded(stats, mean):
    assert stats.as_dict()["mean_size"] == mean
