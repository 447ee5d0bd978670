"""Unit: a variant's runner is chosen once from what its backend declares (or the settings),
runs inline on the event loop or off it in a thread pool, and answers only while started."""

import asyncio
import threading

import numpy as np
import pytest

from api.batching import Batcher
from api.problems import Kind, ServiceError
from api.runners import Inline, Threaded, build


class Backend:
    def __init__(self, inline: bool, batches: bool) -> None:
        self.inline, self.batches = inline, batches
        self.threads: list = []

    def predict(self, rows):
        self.threads.append(threading.current_thread())
        return np.array([[0.5, 0.5]] * len(rows))


@pytest.mark.parametrize(
    ("inline", "batches", "kind", "cls"),
    [
        (True, False, None, Inline),  # onnx
        (False, True, None, Batcher),  # sklearn
        (False, False, None, Threaded),
        (True, True, None, Batcher),  # batching wins when a backend gains from it
        (False, True, "inline", Inline),  # the settings decide when they say
        (True, False, "thread", Threaded),
        (True, False, "batch", Batcher),
    ],
)
def test_the_runner_follows_the_backend_unless_told(inline, batches, kind, cls):
    runner = build(Backend(inline, batches), "v", kind, 64, 5.0, 3)
    assert type(runner) is cls


def test_batch_and_thread_runners_take_their_settings():
    batcher = build(Backend(False, True), "v", None, 64, 5.0, 3)
    assert (batcher.max_size, batcher.max_latency_s) == (64, 0.005)
    assert batcher.describe()["runner"] == "batch"
    threaded = build(Backend(False, False), "v", None, 64, 5.0, 3)
    assert threaded.describe() == {"runner": "thread", "threads": 3}
    assert build(Backend(True, False), "v", None, 64, 5.0, 3).describe() == {"runner": "inline"}


def test_a_batcher_counts_its_batches_under_its_variants_name():
    from prometheus_client import REGISTRY

    labels = {"variant": "variant-x"}
    before = REGISTRY.get_sample_value("lockserve_batch_rows_count", labels) or 0.0
    batcher = build(Backend(False, True), "variant-x", None, 64, 1.0, 3)

    async def main():
        await batcher.start()
        await batcher.run([1, 2])
        await batcher.stop()

    asyncio.run(main())
    assert REGISTRY.get_sample_value("lockserve_batch_rows_count", labels) - before == 1


def test_inline_runs_on_the_event_loop_thread_and_threaded_off_it():
    inline_backend, threaded_backend = Backend(True, False), Backend(False, False)

    async def main():
        inline, threaded = Inline(inline_backend), Threaded(threaded_backend, 2)
        for runner in (inline, threaded):
            await runner.start()
        await inline.run([1])
        await threaded.run([1, 2])
        for runner in (inline, threaded):
            await runner.stop()
        return threading.current_thread()

    loop_thread = asyncio.run(main())
    assert inline_backend.threads == [loop_thread]
    assert threaded_backend.threads[0] is not loop_thread


def test_a_thread_runner_answers_only_while_started():
    async def main():
        runner = Threaded(Backend(False, False), 1)
        refusals = []
        try:
            await runner.run([1])
        except ServiceError as exc:
            refusals.append(exc)
        await runner.start()
        out = await runner.run([1, 2])
        await runner.stop()
        try:
            await runner.run([1])
        except ServiceError as exc:
            refusals.append(exc)
        return out, refusals

    out, refusals = asyncio.run(main())
    assert out.shape == (2, 2)
    assert [(e.kind, e.message) for e in refusals] == [
        (Kind.UNAVAILABLE, "the model's thread pool is not running")
    ] * 2
