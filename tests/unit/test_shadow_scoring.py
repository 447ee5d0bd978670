"""Unit: shadow scoring off the request path: what each scored request logs and counts, how a
failing shadow is counted, and what a full queue drops."""

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.shadowing import ShadowRunner, ShadowStats


@dataclass
class Backend:
    task: str
    classes: list[Any]
    answer: Any  # rows -> output, or an exception to raise

    def predict(self, rows):
        self.threads.append(threading.current_thread())
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(rows)

    def __post_init__(self):
        self.threads = []


@dataclass
class Model:
    backend: Backend
    md5: str


class Store:
    def __init__(self, **models: Model) -> None:
        self.models = models

    def get(self, variant: str) -> Model:
        return self.models[variant]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def shadow_counts(variant: str) -> dict[str, float]:
    return {
        outcome: sample("lockserve_shadow_instances_total", variant=variant, outcome=outcome)
        for outcome in ("agree", "disagree", "failed")
    }


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def score(runner: ShadowRunner, *jobs: tuple) -> list[logging.LogRecord]:
    """Submit ``jobs`` from inside a running loop; return the shadow log lines once there is
    one for each job (each scored or failed request logs exactly one)."""
    lines, logger = Lines(), logging.getLogger("lockserve.shadow")

    async def main():
        await runner.start()
        for job in jobs:
            runner.submit(*job)
        for _ in range(500):
            if len(lines.records) >= len(jobs):
                await asyncio.sleep(0.02)  # a line too many would show up now
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(lines.records)} shadow log lines for {len(jobs)} requests")

    logger.addHandler(lines)
    level, logger.level = logger.level, logging.INFO
    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(lines)
        logger.level = level
    return lines.records


def classifier(labels: list[str], classes=("Adelie", "Gentoo")):
    """A backend whose probabilities put all weight on ``labels`` in turn."""

    def answer(rows):
        assert len(rows) == len(labels)
        return np.array([[1.0 if c == label else 0.0 for c in classes] for label in labels])

    return Backend("classification", list(classes), answer)


def test_classification_logs_both_labels_and_their_agreement():
    shadow = classifier(["Adelie", "Adelie", "Gentoo"])
    runner = ShadowRunner(Store(cand=Model(shadow, "md5-c")))
    before = shadow_counts("cand")
    rows = [("Biscoe", 15.0), ("Dream", 18.0), ("Dream", 17.0)]
    (line,) = score(runner, ("cand", rows, "req-1", ["Adelie", "Gentoo", "Gentoo"]))
    assert line.levelno == logging.INFO
    assert line.fields == {
        "request_id": "req-1",
        "variant": "cand",
        "md5": "md5-c",
        "primary_labels": ["Adelie", "Gentoo", "Gentoo"],
        "shadow_labels": ["Adelie", "Adelie", "Gentoo"],
        "agreement": 2 / 3,
    }
    assert line.getMessage() == "shadow cand on request req-1: 2/3 agree"
    after = shadow_counts("cand")
    assert after["agree"] - before["agree"] == 2
    assert after["disagree"] - before["disagree"] == 1
    assert after["failed"] == before["failed"]
    assert runner.stats["cand"].as_dict() == {
        "scored": 3,
        "agreement": 0.6667,
        "mean_abs_diff": 0.0,
        "failed": 0,
        "dropped": 0,
    }


def test_regression_logs_both_values_and_the_largest_difference():
    backend = Backend("regression", [], lambda rows: np.array([1.0, 2.5, 3.0])[: len(rows)])
    runner = ShadowRunner(Store(cand=Model(backend, "md5-r")))
    before = shadow_counts("cand")
    records = score(
        runner,
        ("cand", [(1,), (2,), (3,)], "req-1", [1.0, 2.0, 4.0]),
        ("cand", [(1,), (2,)], "req-2", [1.0, 2.5]),
    )
    lines = {r.fields["request_id"]: r.fields for r in records}
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in records)
    assert lines["req-1"] == {
        "request_id": "req-1",
        "variant": "cand",
        "md5": "md5-r",
        "primary_values": [1.0, 2.0, 4.0],
        "shadow_values": [1.0, 2.5, 3.0],
        "max_abs_diff": 1.0,
    }
    assert lines["req-2"]["max_abs_diff"] == 0.0
    after = shadow_counts("cand")
    assert (after["agree"] - before["agree"], after["disagree"] - before["disagree"]) == (3, 2)
    # 5 instances, 3 equal; |differences| add up to 0 + 0.5 + 1.0 + 0 + 0
    assert runner.stats["cand"].as_dict() == {
        "scored": 5,
        "agreement": 0.6,
        "mean_abs_diff": 0.3,
        "failed": 0,
        "dropped": 0,
    }


def test_a_failing_shadow_is_counted_logged_and_does_not_stop_scoring():
    broken = Backend("classification", ["a", "b"], RuntimeError("shadow model exploded"))
    runner = ShadowRunner(Store(bad=Model(broken, "m1"), good=Model(classifier(["Adelie"]), "m2")))
    before = shadow_counts("bad")
    records = score(
        runner,
        ("bad", [(1,), (2,)], "req-1", ["a", "b"]),
        ("bad", [(3,)], "req-2", ["a"]),
        ("good", [(4,)], "req-3", ["Adelie"]),
    )
    failures = [r for r in records if r.levelno == logging.WARNING]
    assert [r.fields for r in failures] == [
        {"request_id": "req-1", "variant": "bad"},
        {"request_id": "req-2", "variant": "bad"},
    ]
    assert [r.getMessage() for r in failures] == [
        "shadow bad failed on request req-1: shadow model exploded",
        "shadow bad failed on request req-2: shadow model exploded",
    ]
    assert shadow_counts("bad")["failed"] - before["failed"] == 3  # instances, not requests
    assert runner.stats["bad"].as_dict()["failed"] == 2  # requests
    assert runner.stats["bad"].scored == 0
    assert runner.stats["good"].as_dict()["scored"] == 1  # the loop went on
    assert [r.levelno for r in records if r.fields["request_id"] == "req-3"] == [logging.INFO]


def test_the_shadow_runs_off_the_event_loop_thread():
    backend = classifier(["Adelie"])
    runner = ShadowRunner(Store(cand=Model(backend, "m")))
    score(runner, ("cand", [(1,)], "r", ["Adelie"]), ("cand", [(2,)], "r", ["Adelie"]))
    assert len(backend.threads) == 2
    assert all(t is not threading.main_thread() for t in backend.threads)


def test_a_full_queue_drops_and_counts_without_waiting():
    runner = ShadowRunner(Store(cand=Model(classifier(["Adelie"]), "m")), max_queue=2)
    before = sample("lockserve_shadow_dropped_total", variant="cand")

    async def main():
        await runner.start()
        for _ in range(5):
            runner.submit("cand", [(1,)], "r", ["Adelie"])  # never awaits: the loop cannot run
        return runner.stats["cand"].dropped

    assert asyncio.run(main()) == 3
    assert sample("lockserve_shadow_dropped_total", variant="cand") - before == 3
    assert runner.stats["cand"].as_dict()["dropped"] == 3


def test_the_default_queue_holds_a_thousand():
    runner = ShadowRunner(Store(cand=Model(classifier(["Adelie"]), "m")))

    async def main():
        await runner.start()
        for _ in range(1001):
            runner.submit("cand", [(1,)], "r", ["Adelie"])
        return runner.stats["cand"].dropped

    assert asyncio.run(main()) == 1


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (ShadowStats(), {"scored": 0, "agreement": 0.0, "mean_abs_diff": 0.0}),
        (
            ShadowStats(scored=3, agreed=1, abs_diff=1.0),
            {"scored": 3, "agreement": 0.3333, "mean_abs_diff": 0.333333},
        ),
        (
            ShadowStats(scored=7, agreed=7, failed=2, dropped=5),
            {"scored": 7, "agreement": 1.0, "mean_abs_diff": 0.0},
        ),
    ],
)
def test_stats_report_rates_rounded(stats, expected):
    assert stats.as_dict() == {**expected, "failed": stats.failed, "dropped": stats.dropped}


def test_nothing_is_scored_before_start_or_after_stop_and_what_is_left_counts_dropped():
    backend = classifier(["Adelie"])
    runner = ShadowRunner(Store(cand=Model(backend, "m")))

    async def main():
        tasks = len(asyncio.all_tasks())
        runner.submit("cand", [(1,)], "r0", ["Adelie"])  # not started: dropped, no task
        assert len(asyncio.all_tasks()) == tasks
        await runner.start()
        runner.submit("cand", [(1,)], "r1", ["Adelie"])
        runner.submit("cand", [(1,)], "r2", ["Adelie"])
        await runner.stop()  # before the loop took them
        runner.submit("cand", [(1,)], "r3", ["Adelie"])
        return len(asyncio.all_tasks()) - tasks

    assert asyncio.run(main()) == 0
    assert runner.stats["cand"].dropped == 4 and backend.threads == []
