"""Unit: serving.yaml validation — every bad file refuses start-up naming the field."""

import pytest

from api.serving import ServingError, parse

GOOD = {
    "canary": "strategy: canary\nvariants:\n  stable: {rev: v1, weight: 90}\n"
    "  candidate: {rev: v2, weight: 10}\n",
    "shadow": "strategy: shadow\nvariants:\n  stable: {rev: v1, role: primary}\n"
    "  candidate: {rev: v2, role: shadow}\n",
    "single": "variants:\n  default: {rev: HEAD}\n",
}

BAD = {
    "unknown strategy": (
        "strategy: blue\nvariants:\n  a: {rev: v1}\n",
        "serving.yaml: strategy: Input should be 'single', 'shadow', 'canary'",
    ),
    "missing weight": (
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: 1}\n  b: {rev: v2}\n",
        "variants.b.weight: canary needs a weight per variant",
    ),
    "negative weight": (
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: -1}\n  b: {rev: v2, weight: 1}\n",
        "variants.a.weight: Input should be greater than or equal to 0",
    ),
    "all weights zero": (
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: 0}\n  b: {rev: v2, weight: 0}\n",
        "canary weights must not all be zero",
    ),
    "duplicate name": (
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: 1}\n  a: {rev: v2, weight: 1}\n",
        "duplicate key 'a' (line 4)",
    ),
    "two primaries": (
        "strategy: shadow\nvariants:\n  a: {rev: v1, role: primary}\n"
        "  b: {rev: v2, role: primary}\n",
        "shadow needs one variant with role: primary",
    ),
    "unknown field": (
        "variants:\n  a: {rev: v1, colour: red}\n",
        "variants.a.colour: Extra inputs are not permitted",
    ),
    "no rev": ("variants:\n  a: {weight: 1}\n", "variants.a.rev: Field required"),
    "no variants": ("strategy: single\n", "variants: Field required"),
    "single with two": (
        "variants:\n  a: {rev: v1}\n  b: {rev: v2}\n",
        "single takes exactly one variant, got 2",
    ),
    "canary with one": (
        "strategy: canary\nvariants:\n  a: {rev: v1, weight: 1}\n",
        "canary needs at least two variants",
    ),
    "not yaml": ("variants: [unclosed\n", "serving.yaml: not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_files_parse(name):
    assert parse(GOOD[name]).strategy == name


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_the_field(case):
    text, message = BAD[case]
    with pytest.raises(ServingError) as err:
        parse(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
