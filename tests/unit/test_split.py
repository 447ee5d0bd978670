"""Unit: the train/test splitting rule (stratified, seeded, every class on both sides)."""

import pandas as pd
import pytest

from src.prepare import split
from src.stage import StageError


def labelled(counts):
    labels = [c for c, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"x": range(len(labels)), "species": labels})


def test_split_is_stratified():
    data = labelled({"A": 50, "B": 30, "C": 20})
    train, test = split(data, "species", 0.2, seed=1)
    assert len(test) == 20 and len(train) == 80
    assert test["species"].value_counts().to_dict() == {"A": 10, "B": 6, "C": 4}


def test_split_is_seeded_and_disjoint():
    data = labelled({"A": 40, "B": 40})
    a = split(data, "species", 0.25, seed=7)
    b = split(data, "species", 0.25, seed=7)
    c = split(data, "species", 0.25, seed=8)
    assert a[1]["x"].tolist() == b[1]["x"].tolist()
    assert a[1]["x"].tolist() != c[1]["x"].tolist()
    assert set(a[0]["x"]).isdisjoint(a[1]["x"])
    assert sorted([*a[0]["x"], *a[1]["x"]]) == list(range(80))


def test_split_keeps_row_order_within_each_side():
    train, test = split(labelled({"A": 30, "B": 30}), "species", 0.3, seed=0)
    assert train["x"].is_monotonic_increasing and test["x"].is_monotonic_increasing


def test_class_with_one_row_cannot_be_split():
    with pytest.raises(StageError, match=r"fewer than 2 rows cannot be split: \['C'\]"):
        split(labelled({"A": 10, "B": 10, "C": 1}), "species", 0.2, seed=0)


@pytest.mark.parametrize("size", [0.0, 1.0, -0.1, 1.5])
def test_test_size_must_be_a_fraction(size):
    with pytest.raises(StageError, match="test_size must be between 0 and 1"):
        split(labelled({"A": 10, "B": 10}), "species", size, seed=0)
