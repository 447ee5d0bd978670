"""Unit: what runs in the background has a lifecycle: the batcher, the thread runner, the
shadow runner and the bandit's flush start their threads and tasks on start, leave none behind
on stop (at once, with nothing left to wait for), can stop before they start and start again
after they stop, and answer whoever still waits with ``unavailable``."""

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.batching import Batcher
from api.problems import Kind, ServiceError
from api.runners import Threaded
from api.serving import Bandit as Options
from api.shadowing import ShadowRunner
from api.strategies.bandit import Bandit
from tests.unit.test_shadow_scoring import Model, Store, classifier


class Recording:
    def __init__(self):
        self.threads: list[str] = []
        self.busy = 0
        self.most = 0
        self.lock = threading.Lock()

    def predict(self, rows):
        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        self.threads.append(threading.current_thread())
        time.sleep(0.05)
        with self.lock:
            self.busy -= 1
        return np.array([[0.5, 0.5]] * len(rows))


def gone(threads: list[threading.Thread], timeout: float = 2.0) -> bool:
    """Whether these threads have all ended (other tests' pools may still run theirs)."""
    for thread in threads:
        thread.join(timeout)
    return not any(thread.is_alive() for thread in threads)


class Empty:
    def record(self, rows):
        pass

    def totals(self):
        return {}


def services():
    recording = Recording()
    return {
        "batch": (Batcher(recording.predict, 8, 0.001, "v"), "batch_", recording),
        "thread": (Threaded(recording, 2), "predict_", recording),
        "shadow": (ShadowRunner(Store(cand=Model(classifier(["Adelie"]), "m"))), "shadow_", None),
        "bandit": (Bandit(["a", "b"], Empty(), Options(), 60.0), None, None),
    }


@pytest.mark.parametrize("name", ["batch", "thread", "shadow", "bandit"])
def test_stop_before_start_and_twice_is_nothing_and_start_again_works(name):
    service, _, _ = services()[name]

    async def main():
        before = len(asyncio.all_tasks())
        await service.stop()  # never started
        for _ in range(2):
            await service.start()
            await service.stop()
        await service.stop()
        return len(asyncio.all_tasks()) - before

    assert asyncio.run(main()) == 0


@pytest.mark.parametrize("name", ["batch", "shadow", "bandit"])
def test_stop_leaves_no_task_at_once(name):
    service, _, _ = services()[name]

    async def main():
        before = len(asyncio.all_tasks())
        await service.start()
        started = len(asyncio.all_tasks()) - before
        await service.stop()  # no sleep: stop waits for its task to end
        return started, len(asyncio.all_tasks()) - before

    assert asyncio.run(main()) == (1, 0)


@pytest.mark.parametrize("name", ["batch", "thread"])
def test_rows_run_on_the_runners_own_threads_which_stop_leaves_behind(name):
    service, prefix, recording = services()[name]

    async def main():
        await service.start()
        await asyncio.gather(*(service.run([i]) for i in range(3)))
        await service.stop()

    asyncio.run(main())
    assert recording.threads and all(t.name.startswith(prefix) for t in recording.threads)
    assert gone(recording.threads)


def test_the_shadow_scores_on_its_own_thread_which_stop_leaves_behind():
    backend = classifier(["Adelie"])
    runner = ShadowRunner(Store(cand=Model(backend, "m")))

    async def main():
        await runner.start()
        runner.submit("cand", [(1,)], "r", ["Adelie"])
        for _ in range(200):
            if backend.threads:
                break
            await asyncio.sleep(0.01)
        await runner.stop()

    asyncio.run(main())
    assert [t.name.startswith("shadow_") for t in backend.threads] == [True]
    assert gone(backend.threads)


@pytest.mark.parametrize("threads", [1, 3])
def test_the_thread_runner_runs_as_many_rows_at_once_as_it_has_threads(threads):
    recording = Recording()
    runner = Threaded(recording, threads)

    async def main():
        await runner.start()
        await asyncio.gather(*(runner.run([i]) for i in range(6)))
        await runner.stop()

    asyncio.run(main())
    assert recording.most == threads


def test_stopping_a_thread_runner_does_not_wait_for_a_row_still_running():
    order: list[str] = []
    gate = threading.Event()

    class Slow:
        def predict(self, rows):
            gate.wait(5)
            order.append("row done")
            return np.zeros((len(rows), 2))

    runner = Threaded(Slow(), 1)

    async def main():
        await runner.start()
        job = asyncio.ensure_future(runner.run([1]))
        await asyncio.sleep(0.05)
        await runner.stop()
        order.append("stopped")
        gate.set()
        await job

    asyncio.run(main())
    assert order == ["stopped", "row done"]


def test_stop_refuses_a_held_over_request_as_unavailable():
    gate = threading.Event()

    def blocked(rows):
        gate.wait(5)
        return np.zeros((len(rows), 2))

    async def main():
        batcher = Batcher(blocked, max_size=2, max_latency_s=0.05)
        await batcher.start()
        first = asyncio.ensure_future(batcher.run([0.1]))
        await asyncio.sleep(0)
        held = asyncio.ensure_future(batcher.run([0.2, 0.3]))  # would overflow: held over
        await asyncio.sleep(0.2)
        assert batcher._held is not None
        await batcher.stop()
        gate.set()
        return await asyncio.gather(first, held, return_exceptions=True)

    results = asyncio.run(main())
    assert [(type(r), r.kind, r.message) for r in results] == [
        (ServiceError, Kind.UNAVAILABLE, "the server is stopping")
    ] * 2


def test_shadow_jobs_left_at_stop_are_counted_dropped_in_the_metrics():
    runner = ShadowRunner(Store(cand=Model(classifier(["Adelie"]), "m")))
    labels = {"variant": "cand"}
    before = REGISTRY.get_sample_value("lockserve_shadow_dropped_total", labels) or 0.0

    async def main():
        await runner.start()
        runner.submit("cand", [(1,)], "r1", ["Adelie"])
        runner.submit("cand", [(1,)], "r2", ["Adelie"])
        await runner.stop()

    asyncio.run(main())
    after = REGISTRY.get_sample_value("lockserve_shadow_dropped_total", labels) or 0.0
    assert after - before == 2


def test_describe_shows_how_each_runner_runs():
    batcher = Batcher(lambda rows: rows, max_size=64, max_latency_s=0.005, name="v")
    assert batcher.describe() == {
        "runner": "batch",
        "max_batch_size": 64,
        "max_latency_ms": 5.0,
        "this_worker": {"batches": 0, "rows": 0, "largest": 0, "mean_size": 0.0},
    }
    shadow = ShadowRunner(Store(cand=Model(classifier(["Adelie"]), "m")))
    assert shadow.describe("never-seen") == {
        "scored": 0,
        "agreement": 0.0,
        "mean_abs_diff": 0.0,
        "failed": 0,
        "dropped": 0,
    }


def test_stopping_the_shadow_runner_does_not_wait_for_a_scoring_still_running():
    from tests.unit.test_shadow_scoring import Backend

    order: list[str] = []
    gate = threading.Event()

    def slow(rows):
        gate.wait(5)
        order.append("scored")
        return np.array([[1.0, 0.0]] * len(rows))

    backend = Backend("classification", ["Adelie", "Gentoo"], slow)
    runner = ShadowRunner(Store(cand=Model(backend, "m")))

    async def main():
        await runner.start()
        runner.submit("cand", [(1,)], "r", ["Adelie"])
        while not backend.threads:
            await asyncio.sleep(0.01)
        await runner.stop()
        order.append("stopped")
        gate.set()

    asyncio.run(main())
    assert gone(backend.threads)
    assert order == ["stopped", "scored"]


def test_a_failed_batch_is_rerun_request_by_request_on_the_batchers_own_thread():
    threads: list[threading.Thread] = []

    def run(rows):
        threads.append(threading.current_thread())
        if "poison" in rows:
            raise ValueError("poison row")
        return np.zeros((len(rows), 2))

    async def main():
        batcher = Batcher(run, max_size=8, max_latency_s=0.05)
        await batcher.start()
        results = await asyncio.gather(
            batcher.run([0.1]), batcher.run(["poison"]), return_exceptions=True
        )
        await batcher.stop()
        return results

    good, bad = asyncio.run(main())
    assert good.shape == (1, 2) and isinstance(bad, ValueError)
    assert len(threads) == 3  # the batch, then each request alone
    assert all(t.name.startswith("batch_") for t in threads)
