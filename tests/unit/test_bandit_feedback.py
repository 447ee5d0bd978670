"""Unit: the bandit's bookkeeping: who answered is written by a background flush, never on the
request path, started and stopped by the lifespan, with a last flush on stop; feedback credits
the variant that answered, waiting for a flush that has not happened yet; and the metrics
count pulls, rewards and feedback."""

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from api.serving import Bandit as Options
from api.state import SqliteState, UnknownRequest
from api.strategies import bandit as bandit_module
from api.strategies.bandit import Bandit

FLUSH_S = Options().flush_ms / 1000


def sample(name: str, variant: str) -> float:
    return REGISTRY.get_sample_value(name, {"variant": variant}) or 0.0


class Recording:
    """A StateStore that records what it is asked and knows only the requests it was given."""

    def __init__(self, unknown_times: int = 0) -> None:
        self.rows: list = []
        self.rewards: list = []
        self.unknown_times = unknown_times

    def record(self, rows):
        self.rows.extend(rows)

    def reward(self, request_id, reward, labels, max_age_s):
        self.rewards.append((request_id, reward, labels, max_age_s))
        if self.unknown_times:
            self.unknown_times -= 1
            raise UnknownRequest(request_id)
        return "b", 0.75

    def totals(self):
        return {"b": (len(self.rows), 0.75 * len(self.rewards), len(self.rewards))}


def test_observing_writes_nothing_until_the_background_flush(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")
    pulls = sample("lockserve_bandit_pulls_total", "a")

    async def main():
        bandit = Bandit(["a", "b"], state, Options(), 86400.0)
        await bandit.start()
        bandit.observe("r1", "a", ["Adelie"])
        bandit.observe("r2", "a", ["Gentoo", "Adelie"])
        bandit.observe(None, "b", ["Adelie"])  # no request id: nothing to credit later
        right_after = state.totals()
        await asyncio.sleep(FLUSH_S * 6)
        return right_after, bandit

    right_after, bandit = asyncio.run(main())
    assert right_after == {}
    assert state.totals() == {"a": (2, 0.0, 0)}
    assert bandit.describe("a")["pulls"] == 2  # the flush also refreshed this worker's view
    assert sample("lockserve_bandit_pulls_total", "a") - pulls == 2
    assert state.reward("r2", None, ["Gentoo", "Gentoo"], 60) == ("a", 0.5)


def test_flush_writes_each_request_once_with_when_it_was_answered(monkeypatch):
    state = Recording()
    monkeypatch.setattr(bandit_module.time, "time", lambda: 1234.5)

    async def main():
        bandit = Bandit(["a", "b"], state, Options(), 86400.0)
        bandit.observe("r1", "a", ["x"])
        bandit.observe("r2", "b", ["y", "z"])
        bandit.flush()
        bandit.flush()
        return bandit

    asyncio.run(main())
    assert state.rows == [("r1", "a", ["x"], 1234.5), ("r2", "b", ["y", "z"], 1234.5)]


def test_feedback_credits_the_variant_and_counts_it():
    state = Recording()
    reward = sample("lockserve_bandit_reward_total", "b")
    feedback = sample("lockserve_bandit_feedback_total", "b")
    bandit = Bandit(["a", "b"], state, Options(), max_age_s=120)
    assert bandit.feedback("r1", None, ["Adelie"]) == ("b", 0.75)
    assert state.rewards == [("r1", None, ["Adelie"], 120)]
    assert sample("lockserve_bandit_reward_total", "b") - reward == 0.75
    assert sample("lockserve_bandit_feedback_total", "b") - feedback == 1


def test_feedback_for_a_request_not_yet_flushed_flushes_first(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")

    async def main():
        bandit = Bandit(["a", "b"], state, Options(), 86400.0)
        bandit.observe("r1", "b", ["Adelie"])
        return bandit.feedback("r1", 1.0, None)  # before any background flush ran

    assert asyncio.run(main()) == ("b", 1.0)
    assert state.totals() == {"b": (1, 1.0, 1)}


def test_feedback_waits_once_for_another_workers_flush(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(bandit_module.time, "sleep", slept.append)
    state = Recording(unknown_times=2)
    bandit = Bandit(["a", "b"], state, Options(), 86400.0)
    assert bandit.feedback("r1", 1.0, None) == ("b", 0.75)
    assert len(state.rewards) == 3 and slept == [2 * FLUSH_S]


def test_feedback_for_an_unknown_request_gives_up_after_three_tries(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(bandit_module.time, "sleep", slept.append)
    state = Recording(unknown_times=10)
    feedback = sample("lockserve_bandit_feedback_total", "b")
    with pytest.raises(UnknownRequest):
        Bandit(["a", "b"], state, Options(), 86400.0).feedback("nope", 1.0, None)
    assert len(state.rewards) == 3 and slept == [2 * FLUSH_S]
    assert sample("lockserve_bandit_feedback_total", "b") == feedback


def test_the_background_flush_keeps_going(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")

    async def main():
        bandit = Bandit(["a", "b"], state, Options(), 86400.0)
        await bandit.start()
        bandit.observe("r1", "a", ["x"])
        await asyncio.sleep(FLUSH_S * 4)
        first = state.totals()
        bandit.observe("r2", "b", ["x"])
        deadline = time.monotonic() + 2
        while state.totals().get("b") is None and time.monotonic() < deadline:
            await asyncio.sleep(FLUSH_S)
        return first

    assert asyncio.run(main()) == {"a": (1, 0.0, 0)}
    assert state.totals() == {"a": (1, 0.0, 0), "b": (1, 0.0, 0)}


def test_observing_starts_no_task_and_stop_writes_what_is_pending(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")

    async def main():
        bandit = Bandit(["a", "b"], state, Options(flush_ms=60000), 86400.0)
        tasks = len(asyncio.all_tasks())
        bandit.observe("r1", "a", ["x"])
        assert len(asyncio.all_tasks()) == tasks  # nothing starts on a request
        await bandit.start()
        bandit.observe("r2", "b", ["y"])
        await asyncio.sleep(0.05)
        before_stop = state.totals()
        await bandit.stop()
        return before_stop, len(asyncio.all_tasks()) - tasks

    before_stop, tasks_left = asyncio.run(main())
    assert before_stop == {}  # a minute between flushes: nothing written yet
    assert state.totals() == {"a": (1, 0.0, 0), "b": (1, 0.0, 0)}
    assert tasks_left == 0
    assert state.reward("r2", 1.0, None, 60) == ("b", 1.0)


def test_the_flush_interval_comes_from_the_options(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")

    async def main():
        bandit = Bandit(["a", "b"], state, Options(flush_ms=10), 86400.0)
        await bandit.start()
        bandit.observe("r1", "a", ["x"])
        await asyncio.sleep(0.3)
        written = state.totals()
        await bandit.stop()
        return written

    assert asyncio.run(main()) == {"a": (1, 0.0, 0)}


def test_waiting_for_another_worker_is_capped_at_a_second(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(bandit_module.time, "sleep", slept.append)
    bandit = Bandit(["a", "b"], Recording(unknown_times=2), Options(flush_ms=60000), 86400.0)
    assert bandit.feedback("r1", 1.0, None) == ("b", 0.75)
    assert slept == [1.0]
