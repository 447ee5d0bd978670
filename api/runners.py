"""How a variant's backend runs a request's rows: inline on the event loop, in a thread pool,
or in adaptive batches (api/batching.py).

One runner per variant, chosen once by :func:`build` from what the backend declares (a backend
fast enough to call inline says so; one that gains from batches says so) and the settings;
started and stopped by the app's lifespan. A runner that is not running refuses with
``unavailable`` rather than starting anything on a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from api.backends import Backend
from api.batching import Batcher
from api.problems import Kind, ServiceError


class Runner(Protocol):
    kind: str  # inline | thread | batch

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run(self, rows: Sequence[Any]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """What GET /model shows of how this variant runs."""
        ...


class Inline:
    """Calls the backend on the event loop: for backends that answer in microseconds."""

    kind = "inline"

    def __init__(self, backend: Backend) -> None:
        self._predict = backend.predict

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def run(self, rows: Sequence[Any]) -> np.ndarray:
        return self._predict(rows)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.kind}


class Threaded:
    """Runs each request's rows in a thread pool, off the event loop."""

    kind = "thread"

    def __init__(self, backend: Backend, threads: int) -> None:
        self._predict = backend.predict
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="predict")

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    async def run(self, rows: Sequence[Any]) -> np.ndarray:
        if self._pool is None:
            raise ServiceError(Kind.UNAVAILABLE, "the model's thread pool is not running")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._predict, rows)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.kind, "threads": self.threads}


def build(
    backend: Backend,
    variant: str,
    kind: str | None,
    max_batch_size: int,
    max_latency_ms: float,
    threads: int,
) -> Runner:
    """The runner ``kind`` names, or by default the one the backend asks for: batches when it
    gains from them, inline when it is fast enough, else a thread pool."""
    if kind is None:
        kind = "batch" if backend.batches else "inline" if backend.inline else "thread"
    kinds = {
        "batch": lambda: Batcher(backend.predict, max_batch_size, max_latency_ms / 1000, variant),
        "inline": lambda: Inline(backend),
        "thread": lambda: Threaded(backend, threads),
    }
    return kinds[kind]()
