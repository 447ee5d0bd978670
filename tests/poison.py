"""A pipeline step for tests: valid rows pass, one valid value (SENTINEL) makes it raise.

Pickled into a test artifact, it gives a request that passes validation and still makes the
backend fail, as a real model's bug would; the server imports it from here on unpickling.
"""

import numpy as np

SENTINEL = 6666.0  # a body mass inside the schema's range


def refuse_sentinel(x: np.ndarray) -> np.ndarray:
    if (np.asarray(x) == SENTINEL).any():
        raise ValueError("the model fails on this row")
    return x
