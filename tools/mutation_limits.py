"""A time limit per test while a mutant runs (`make mutation` loads this with ``-p``).

A mutant that makes the code wait forever (a batch whose futures are never set, a loop that
never ends) would hold its worker until mutmut's own limit, about 15 times the run time of all
the tests it picked. Here each test of a mutant run fails after 5 s plus 5 times what it took
on the clean run, so such a mutant is caught in seconds. Outside a mutant run (the clean and
stats runs, plain pytest) nothing changes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FLOOR_S = 5.0
FACTOR = 5.0
_durations: dict[str, float] | None = None


class MutantTimeout(BaseException):
    """Not an Exception, so no ``except Exception`` (or TimeoutError) in the code swallows it."""


def limit_for(nodeid: str) -> float | None:
    """Seconds the test may take under the mutant being run, or None outside a mutant run."""
    global _durations
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return None
    if _durations is None:
        try:  # mutmut runs the tests from mutants/, where it keeps the clean run's durations
            _durations = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
        except (OSError, ValueError, KeyError):
            _durations = {}
    return FLOOR_S + FACTOR * _durations.get(nodeid, 0.0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: Any) -> Iterator[None]:
    limit = limit_for(item.nodeid)
    if limit is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise MutantTimeout(f"{item.nodeid} took over {limit:.1f} s under a mutant")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
