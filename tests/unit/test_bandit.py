"""Unit: bandit sampling and the shared state (feedback rules, persistence), every state test
run on both stores, the SQLite file and a real redis-server, so that the two keep one contract.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.serving import Bandit as Options
from api.state import AlreadyRewarded, SqliteState, UnknownRequest
from api.state_redis import RedisState
from api.strategies.bandit import Bandit

DAY_S = 86400.0


@pytest.fixture(params=["sqlite", "redis"])
def open_state(request, tmp_path):
    """Opens a store on this test's storage: each call another connection (another worker of
    one host with SQLite, another host with Redis) to the same state."""
    if request.param == "sqlite":
        return lambda: SqliteState(tmp_path / "state.sqlite")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisState(url, DAY_S)


@pytest.fixture()
def state(open_state):
    return open_state()


def test_record_then_reward_credits_the_answering_variant(state):
    state.record([("r1", "a", ["Adelie"], time.time()), ("r2", "b", ["Gentoo"], time.time())])
    assert state.reward("r1", 0.5, None, 60) == ("a", 0.5)
    assert state.reward("r2", None, ["Adelie"], 60) == ("b", 0.0)
    assert state.totals() == {"a": (1, 0.5, 1), "b": (1, 0.0, 1)}


def test_feedback_twice_is_refused_and_counted_once(state):
    state.record([("r1", "a", ["Adelie"], time.time())])
    state.reward("r1", 1.0, None, 60)
    with pytest.raises(AlreadyRewarded):
        state.reward("r1", 1.0, None, 60)
    assert state.totals()["a"] == (1, 1.0, 1)


def test_unknown_and_expired_requests(state):
    state.record([("old", "a", ["Adelie"], time.time() - 120)])
    with pytest.raises(UnknownRequest):
        state.reward("nope", 1.0, None, 60)
    with pytest.raises(UnknownRequest):
        state.reward("old", 1.0, None, 60)


def test_label_count_must_match(state):
    state.record([("r1", "a", ["Adelie", "Gentoo"], time.time())])
    with pytest.raises(ValueError, match="answered 2 instance"):
        state.reward("r1", None, ["Adelie"], 60)
    assert state.reward("r1", None, ["Adelie", "Adelie"], 60) == ("a", 0.5)


def test_state_survives_a_new_connection(open_state):
    first = open_state()
    first.record([("r1", "a", ["Adelie"], time.time())])
    first.reward("r1", 1.0, None, 60)
    again = open_state()
    assert again.totals() == {"a": (1, 1.0, 1)}
    with pytest.raises(AlreadyRewarded):
        again.reward("r1", 1.0, None, 60)


def test_a_request_id_answered_twice_keeps_its_first_answer_and_counts_two_pulls(state):
    now = time.time()
    state.record([("r1", "a", ["Adelie"], now)])
    state.record([("r1", "b", ["Gentoo"], now + 1)])
    assert state.totals() == {"a": (1, 0.0, 0), "b": (1, 0.0, 0)}
    assert state.reward("r1", None, ["Adelie"], 60) == ("a", 1.0)
    with pytest.raises(AlreadyRewarded):
        state.reward("r1", None, ["Gentoo"], 60)


def test_one_reward_from_each_connection_at_once_is_counted_once(open_state):
    """Four connections (workers, or hosts) send the same 50 feedbacks at the same time: each
    request is credited exactly once, every other try is refused as already counted."""
    stores = [open_state() for _ in range(4)]
    now = time.time()
    stores[0].record([(f"r{i}", "a" if i % 2 else "b", ["x"], now) for i in range(50)])
    start = threading.Barrier(len(stores))

    def credit_all(store):
        start.wait()
        credited = refused = 0
        for i in range(50):
            try:
                store.reward(f"r{i}", 1.0, None, 60)
                credited += 1
            except AlreadyRewarded:
                refused += 1
        return credited, refused

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(credit_all, stores))
    assert sum(c for c, _ in results) == 50
    assert sum(r for _, r in results) == 150
    assert stores[1].totals() == {"a": (25, 25.0, 25), "b": (25, 25.0, 25)}


@pytest.mark.parametrize("algorithm", ["thompson", "epsilon_greedy"])
def test_bandit_prefers_the_better_arm_once_it_knows(state, algorithm):
    now = time.time()
    rows = [(f"a{i}", "a", ["x"], now) for i in range(100)]
    rows += [(f"b{i}", "b", ["x"], now) for i in range(100)]
    state.record(rows)
    for i in range(100):
        state.reward(f"a{i}", 1.0 if i < 30 else 0.0, None, 60)
        state.reward(f"b{i}", 1.0 if i < 90 else 0.0, None, 60)
    bandit = Bandit(["a", "b"], state, Options(algorithm=algorithm, epsilon=0.1, seed=3), DAY_S)
    picks = [bandit.choose(None) for _ in range(1000)]
    assert picks.count("b") > 850
    assert bandit.describe("b") == {
        "role": "arm",
        "pulls": 100,
        "feedbacks": 100,
        "mean_reward": 0.9,
    }


@pytest.mark.parametrize("algorithm", ["thompson", "epsilon_greedy"])
def test_bandit_is_seeded(state, algorithm):
    """One seed repeats its sequence; another seed gives another one (so it is not constant)."""

    def picks(seed):
        bandit = Bandit(
            ["a", "b", "c"], state, Options(algorithm=algorithm, epsilon=0.5, seed=seed), DAY_S
        )
        return [bandit.choose(None) for _ in range(60)]

    assert picks(5) == picks(5)
    assert picks(5) != picks(6)
    assert set(picks(5)) == {"a", "b", "c"}


def reward(state, variant, value, n=1):
    now = time.time()
    for i in range(n):
        rid = f"{variant}-{value}-{i}-{now}"
        state.record([(rid, variant, ["x"], now)])
        state.reward(rid, value, None, 60)


def test_epsilon_greedy_tries_every_arm_before_exploiting(state):
    """With no exploration (epsilon 0), an arm without feedback is chosen before any arm with
    feedback, however good; once every arm has some, the best mean wins."""
    bandit = Bandit(["a", "b", "c"], state, Options(algorithm="epsilon_greedy", epsilon=0.0), DAY_S)
    assert bandit.choose(None) == "a"
    reward(state, "a", 1.0)
    bandit.flush()
    assert bandit.choose(None) == "b"
    reward(state, "b", 0.0)
    bandit.flush()
    assert bandit.choose(None) == "c"
    reward(state, "c", 0.5)
    bandit.flush()
    assert [bandit.choose(None) for _ in range(20)] == ["a"] * 20
    reward(state, "b", 1.0, n=4)  # b: 4/5 = 0.8 < a: 1/1, though b has more reward in all
    bandit.flush()
    assert bandit.choose(None) == "a"
    reward(state, "b", 1.0, n=5)  # b: 9/10 = 0.9
    reward(state, "a", 0.0, n=3)  # a: 1/4 = 0.25; c: 0.5
    bandit.flush()
    assert bandit.choose(None) == "b"


def test_epsilon_explores_at_its_rate(state):
    reward(state, "a", 1.0, n=5)
    reward(state, "b", 0.0, n=5)
    bandit = Bandit(
        ["a", "b"], state, Options(algorithm="epsilon_greedy", epsilon=0.2, seed=1), DAY_S
    )
    picks = [bandit.choose(None) for _ in range(5000)]
    # exploring picks either arm at random: b about epsilon / 2 of the time
    assert 0.08 < picks.count("b") / len(picks) < 0.12


class Draws:
    """Stands in for the bandit's random generator: records each Beta draw's parameters and
    returns the arm's mean, so the pick is the arm with the best posterior mean."""

    def __init__(self) -> None:
        self.params: list[tuple[float, float]] = []

    def betavariate(self, alpha: float, beta: float) -> float:
        self.params.append((alpha, beta))
        return alpha / (alpha + beta)


def test_thompson_draws_from_each_arms_beta_posterior(state):
    """Beta(1 + reward, 1 + feedbacks - reward): a uniform prior updated by the feedback."""
    reward(state, "a", 1.0, n=3)
    reward(state, "a", 0.0, n=1)  # a: 3 of 4
    reward(state, "b", 0.5, n=2)  # b: 1.0 of 2
    bandit = Bandit(["a", "b", "c"], state, Options(), DAY_S)
    bandit._random = draws = Draws()
    assert bandit.choose(None) == "a"  # means 4/6, 2/4, 1/2
    assert draws.params == [(4.0, 2.0), (2.0, 2.0), (1.0, 1.0)]
