"""Unit: what each strategy built from serving.yaml routes and what GET /model says of it."""

import hashlib
import time
from pathlib import Path

from api.serving import Bandit as Options
from api.serving import parse
from api.state import SqliteState
from api.strategies import build
from api.strategies.bandit import Bandit
from api.strategies.canary import Canary, key_point
from api.strategies.shadow import Shadow
from api.strategies.single import Single

CANARY = "strategy: canary\nvariants:\n  a: {rev: v1, weight: %s}\n  b: {rev: v2, weight: %s}\n"


def test_single_answers_with_its_one_variant():
    single = build(parse("variants:\n  only: {rev: HEAD}\n"))
    assert isinstance(single, Single)
    assert (single.name, single.primary, single.shadows) == ("single", "only", [])
    assert {single.choose(None), single.choose("user-1")} == {"only"}
    assert single.describe("only") == {"role": "primary"}


def test_shadow_primary_answers_and_the_rest_are_shadows():
    shadow = build(
        parse(
            "strategy: shadow\nvariants:\n  s1: {rev: v1, role: shadow}\n"
            "  p: {rev: v2, role: primary}\n  s2: {rev: v3, role: shadow}\n"
        )
    )
    assert isinstance(shadow, Shadow)
    assert (shadow.name, shadow.primary, shadow.shadows) == ("shadow", "p", ["s1", "s2"])
    assert {shadow.choose(None), shadow.choose("user-1")} == {"p"}
    assert [shadow.describe(v)["role"] for v in ("p", "s1", "s2")] == [
        "primary",
        "shadow",
        "shadow",
    ]


def test_canary_weights_are_shares_and_the_heaviest_is_primary():
    canary = build(parse(CANARY % (1, 2)))
    assert isinstance(canary, Canary)
    assert (canary.name, canary.primary, canary.shadows) == ("canary", "b", [])
    assert canary.describe("a") == {"role": "canary", "weight": 0.333333}
    assert canary.describe("b") == {"role": "canary", "weight": 0.666667}


def test_a_zero_weight_from_serving_yaml_never_answers():
    canary = build(parse(CANARY % (0, 3)))
    assert canary.describe("a")["weight"] == 0.0
    assert {canary.choose(None) for _ in range(500)} == {"b"}
    assert {canary.choose(f"user-{i}") for i in range(500)} == {"b"}


def test_canary_routes_a_key_by_where_its_point_falls():
    canary = Canary({"a": 1, "b": 1, "c": 2})  # a: [0, .25), b: [.25, .5), c: [.5, 1)
    keys = [f"user-{i}" for i in range(2000)]
    for key in keys:
        point = key_point(key)
        assert canary.choose(key) == ("a" if point < 0.25 else "b" if point < 0.5 else "c")


def test_key_point_is_the_keys_hash_spread_over_the_unit_interval():
    points = [key_point(f"user-{i}") for i in range(4000)]
    assert len(set(points)) == len(points)
    for lo in (0.0, 0.25, 0.5, 0.75):
        share = sum(lo <= p < lo + 0.25 for p in points) / len(points)
        assert abs(share - 0.25) < 0.03
    # the point is fixed across processes and releases (a user keeps their variant through a
    # restart or a deploy): blake2b's 8-byte digest, big-endian, over 2**64
    for key in ("user-1", "Ünïcode key", "x" * 300):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        assert key_point(key) == int.from_bytes(digest, "big") / 2**64


def test_canary_never_falls_off_the_end_of_its_weights():
    # shares that do not add up to exactly 1.0 in floating point
    canary = Canary({"a": 0.1, "b": 0.2, "c": 0.7}, seed=3)
    assert canary._bounds[-1] == 1.0
    assert {canary.choose(None) for _ in range(3000)} == {"a", "b", "c"}


def test_canary_without_a_key_draws_from_its_own_seeded_stream():
    first = [Canary({"a": 1, "b": 1}, seed=5).choose(None) for _ in range(1)]
    one = Canary({"a": 1, "b": 1}, seed=5)
    again = Canary({"a": 1, "b": 1}, seed=5)
    assert [one.choose(None) for _ in range(50)] == [again.choose(None) for _ in range(50)]
    assert first[0] in {"a", "b"}


def bandit_yaml(options: str = "") -> str:
    text = "strategy: bandit\nvariants:\n  a: {rev: v1}\n  b: {rev: v2}\n"
    return text + (f"bandit: {{{options}}}\n" if options else "")


def test_bandit_from_serving_yaml_keeps_its_state_where_told(tmp_path):
    db = tmp_path / "state" / "bandit.sqlite"
    bandit = build(parse(bandit_yaml("algorithm: epsilon_greedy, epsilon: 0.25, seed: 9")), db, 60)
    assert isinstance(bandit, Bandit)
    assert (bandit.name, bandit.primary, bandit.shadows) == ("bandit", "a", [])
    assert (bandit.variants, bandit.algorithm, bandit.epsilon) == (
        ["a", "b"],
        "epsilon_greedy",
        0.25,
    )
    assert bandit.max_age_s == 60
    assert db.exists()
    options = Options(algorithm="epsilon_greedy", epsilon=0.25, seed=9)
    same_seed = Bandit(["a", "b"], SqliteState(tmp_path / "other.sqlite"), options, 60)
    assert [bandit.choose(None) for _ in range(40)] == [same_seed.choose(None) for _ in range(40)]


def test_bandit_defaults_are_thompson_seed_0_and_a_day_of_feedback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bandit = build(parse(bandit_yaml()))
    assert (bandit.algorithm, bandit.epsilon, bandit.max_age_s) == ("thompson", 0.1, 86400.0)
    assert Path(".lockserve/state.sqlite").exists()
    seeded = Bandit(["a", "b"], SqliteState(tmp_path / "s.sqlite"), Options(seed=0), 1)
    assert [bandit.choose(None) for _ in range(40)] == [seeded.choose(None) for _ in range(40)]
    named = build(parse(bandit_yaml("algorithm: thompson")))
    assert (named.epsilon, named.max_age_s) == (0.1, 86400.0)
    again = Bandit(["a", "b"], SqliteState(tmp_path / "t.sqlite"), Options(seed=0), 1)
    assert [named.choose(None) for _ in range(40)] == [again.choose(None) for _ in range(40)]


def test_bandit_describes_each_arms_pulls_feedback_and_mean_reward(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite")
    now = time.time()
    state.record([(f"r{i}", "a", ["x"], now) for i in range(5)] + [("q", "b", ["x"], now)])
    for i, reward in enumerate([1.0, 0.0, 0.0]):
        state.reward(f"r{i}", reward, None, 60)
    bandit = Bandit(["a", "b"], state, Options(), 60)
    assert bandit.describe("a") == {
        "role": "arm",
        "pulls": 5,
        "feedbacks": 3,
        "mean_reward": 0.3333,
    }
    assert bandit.describe("b") == {"role": "arm", "pulls": 1, "feedbacks": 0, "mean_reward": None}
    assert bandit.describe("c") == {"role": "arm", "pulls": 0, "feedbacks": 0, "mean_reward": None}
