"""Unit: routing arithmetic of the strategies."""

import math

from api.serving import parse
from api.strategies import build
from api.strategies.canary import Canary, key_point


def test_canary_split_over_10000_requests_is_within_3_sd():
    canary = Canary({"stable": 90, "candidate": 10}, seed=7)
    n = 10_000
    hits = sum(canary.choose(None) == "candidate" for _ in range(n))
    sd = math.sqrt(n * 0.1 * 0.9)
    assert abs(hits - n * 0.1) <= 3 * sd


def test_canary_keys_are_sticky_and_split_by_weight():
    canary = Canary({"stable": 70, "candidate": 30})
    keys = [f"user-{i}" for i in range(10_000)]
    first = [canary.choose(k) for k in keys]
    assert first == [canary.choose(k) for k in keys]
    share = first.count("candidate") / len(keys)
    assert abs(share - 0.3) <= 3 * math.sqrt(0.3 * 0.7 / len(keys))


def test_key_point_is_stable_and_in_unit_interval():
    assert key_point("abc") == key_point("abc") != key_point("abd")
    assert all(0 <= key_point(str(i)) < 1 for i in range(1000))


def test_zero_weight_variant_never_answers():
    canary = Canary({"a": 1, "b": 0}, seed=1)
    assert {canary.choose(None) for _ in range(1000)} == {"a"}


def test_build_from_config():
    shadow = build(
        parse(
            "strategy: shadow\nvariants:\n  s: {rev: v1, role: shadow}\n"
            "  p: {rev: v2, role: primary}\n"
        )
    )
    assert (shadow.name, shadow.primary, shadow.shadows, shadow.choose("k")) == (
        "shadow",
        "p",
        ["s"],
        "p",
    )
    canary = build(
        parse("strategy: canary\nvariants:\n  a: {rev: v1, weight: 3}\n  b: {rev: v2, weight: 1}\n")
    )
    assert canary.primary == "a" and canary.describe("b") == {"role": "canary", "weight": 0.25}
    single = build(parse("variants:\n  only: {rev: HEAD}\n"))
    assert single.choose(None) == "only" and single.shadows == []
