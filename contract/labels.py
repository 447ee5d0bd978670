"""The answer rule: which class a row of probabilities names.

The first class, in the artifact's ``classes`` order, whose probability is within ``TIE`` of
the highest. Float32 (ONNX) and float64 (sklearn) sums then name the same class on ties.
"""

from __future__ import annotations

import struct

import numpy as np

TIE = 1e-6
FEW = 8  # up to this many rows, label_list reads them in Python (numpy's calls cost more)
_F32 = struct.Struct("f")
_TIE32 = _F32.unpack(_F32.pack(TIE))[0]  # TIE as numpy takes it into float32 arithmetic
# a float32 row's highest value in this range keeps (highest - _TIE32) exact as a double, so
# one rounding to float32 gives numpy's float32 subtraction
_EXACT32 = (2.0**-19, 2.0**10)


def labels(proba: np.ndarray) -> np.ndarray:
    """Index of the answered class per row."""
    return (proba >= proba.max(axis=1, keepdims=True) - TIE).argmax(axis=1)


def label_list(proba: np.ndarray) -> list[int]:
    """``labels(proba)`` as a list. A few rows of float32 or float64 are read in Python with the
    same arithmetic numpy does (float32: the threshold rounded to float32); anything else (more
    rows, a NaN, a float32 maximum outside the range where that is exact) goes to numpy."""
    if len(proba) > FEW or proba.ndim != 2 or proba.dtype not in (np.float32, np.float64):
        return labels(proba).tolist()
    single = proba.dtype == np.float32
    out = []
    for row in proba.tolist():
        top = max(row)
        if any(p != p for p in row) or (single and not _EXACT32[0] <= top <= _EXACT32[1]):
            return labels(proba).tolist()
        threshold = _F32.unpack(_F32.pack(top - _TIE32))[0] if single else top - TIE
        out.append(next(i for i, p in enumerate(row) if p >= threshold))
    return out
