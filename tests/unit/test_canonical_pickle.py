"""Unit: the deterministic writer gives the same bytes for the same fitted object, anywhere."""

import hashlib
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from src.stage import canonical_pickle
from tests.conftest import ROOT

RESERIALISE = """
import hashlib, pickle, sys
from src.stage import canonical_pickle
model = pickle.loads(open(sys.argv[1], "rb").read())
print(hashlib.md5(canonical_pickle(model)).hexdigest())
"""


def test_equal_values_give_equal_bytes_whatever_their_identity():
    a = {"key": "".join(["max_", "depth"]), "other": "".join(["max_", "depth"])}
    b = {"key": "max_depth", "other": "max_depth"}
    assert a["key"] is not a["other"]
    assert canonical_pickle(a) == canonical_pickle(b)
    assert pickle.loads(canonical_pickle(a)) == a


def test_structured_array_padding_is_zeroed():
    dtype = np.dtype(
        {"names": ["a", "b"], "formats": ["<f8", "u1"], "offsets": [0, 8], "itemsize": 16}
    )
    dirty = np.frombuffer(bytes(range(32)), dtype=dtype)  # padding bytes 9..15 are not zero
    clean = np.zeros(2, dtype)
    clean["a"], clean["b"] = dirty["a"], dirty["b"]
    assert dirty.tobytes() != clean.tobytes()
    assert canonical_pickle(dirty) == canonical_pickle(clean)
    np.testing.assert_array_equal(pickle.loads(canonical_pickle(dirty)), dirty)


def test_forest_serialised_in_two_processes_gives_identical_bytes(tmp_path, penguins_csv):
    from io import StringIO

    frame = pd.read_csv(StringIO(penguins_csv)).dropna()
    x = frame[["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]].to_numpy()
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, frame["species"])
    fitted = canonical_pickle(forest)
    path = tmp_path / "forest.pkl"
    path.write_bytes(pickle.dumps(forest))  # the ordinary pickler's bytes, loaded twice below

    digests = [
        subprocess.run(
            [sys.executable, "-c", RESERIALISE, str(path)],
            cwd=ROOT,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2)
    ]
    assert digests[0] == digests[1] == hashlib.md5(fitted).hexdigest()
    reloaded = pickle.loads(fitted)
    np.testing.assert_array_equal(reloaded.predict_proba(x), forest.predict_proba(x))


def test_folding_never_changes_a_value_or_its_type():
    """Equal but differently typed or signed values are not folded into one memo entry."""
    value = {
        "floats": (1.0, 2.0),
        "ints": (1, 2),
        "negative_zero": (-0.0,),
        "zero": (0.0,),
        "bool": (True, 1),
        "int": (1, True),
        "nested": ("x", (1.5, "y")),
        "nested_int": ("x", (1, "y")),
    }
    back = pickle.loads(canonical_pickle(value))
    assert {k: repr(v) for k, v in back.items()} == {k: repr(v) for k, v in value.items()}


def test_equal_atom_tuples_share_bytes_whatever_their_identity():
    one = ("a" * 3, (1.0, "b"))
    two = ("".join(["a", "aa"]), (1.0, "".join(["b"])))
    assert canonical_pickle([one, one]) == canonical_pickle([one, two])


def test_structured_dtypes_of_one_size_stay_apart():
    """Two record layouts of the same byte size (the same ``dtype.str``) are two dtypes."""
    first, second = np.dtype([("a", "<f8")]), np.dtype([("b", "<f8")])
    assert first.str == second.str
    back = pickle.loads(canonical_pickle([first, second, first]))
    assert back == [first, second, first]
    assert [d.names for d in back] == [("a",), ("b",), ("a",)]
