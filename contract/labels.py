"""The answer rule: which class a row of probabilities names.

The first class, in the artifact's ``classes`` order, whose probability is within ``TIE`` of
the highest. Float32 (ONNX) and float64 (sklearn) sums then name the same class on ties.
"""

from __future__ import annotations

import numpy as np

TIE = 1e-6


def labels(proba: np.ndarray) -> np.ndarray:
    """Index of the answered class per row."""
    return (proba >= proba.max(axis=1, keepdims=True) - TIE).argmax(axis=1)
