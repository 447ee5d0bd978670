"""Adaptive batching: requests that arrive while the model is busy run as one batch.

Only validated instances ever join a batch. A batch that fails (it should not: every row was
validated) is re-run request by request, so one request can never fail its batch-mates. The
collecting task and the model's thread are started and stopped by the app's lifespan
(:meth:`Batcher.start`, :meth:`Batcher.stop`), never by a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from api import metrics
from api.problems import Kind, ServiceError

log = logging.getLogger("lockserve.batching")


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, float]:
        mean = self.rows / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "rows": self.rows,
            "largest": self.largest,
            "mean_size": round(mean, 2),
        }


class Batcher:
    """Collects rows for up to ``max_latency_s`` (or ``max_size`` rows), runs them together.

    A runner (api/runners.py): ``run`` answers rows once ``start`` has run.
    """

    kind = "batch"

    def __init__(
        self,
        run: Callable[[Sequence[Any]], np.ndarray],
        max_size: int,
        max_latency_s: float,
        name: str = "",
    ) -> None:
        self._run = run
        self._rows_metric = metrics.BATCH_ROWS.labels(name)
        self.max_size = max_size
        self.max_latency_s = max_latency_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Sequence[Any], asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._held: tuple[Sequence[Any], asyncio.Future] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running: list[tuple[Sequence[Any], asyncio.Future]] = []  # the batch computing

    async def start(self) -> None:
        """Start the collecting task and the model's thread on the running loop."""
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop collecting; a request still waiting is refused as unavailable."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pending = [*self._running, *([self._held] if self._held is not None else [])]
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for _, future in pending:
            if not future.done():
                future.set_exception(ServiceError(Kind.UNAVAILABLE, "the server is stopping"))
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # a batch still computing ends on its own
        self._queue = self._task = self._held = self._pool = None
        self._running = []

    async def run(self, rows: Sequence[Any]) -> np.ndarray:
        """Probabilities for ``rows``, computed in some batch together with other requests."""
        if self._task is None or self._queue is None or self._task.done():
            raise ServiceError(Kind.UNAVAILABLE, "the model's batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    def describe(self) -> dict[str, Any]:
        return {
            "runner": self.kind,
            "max_batch_size": self.max_size,
            "max_latency_ms": self.max_latency_s * 1000,
            "this_worker": self.stats.as_dict(),
        }

    async def _next(self, timeout: float | None) -> tuple[Sequence[Any], asyncio.Future] | None:
        """The held-over request, else the next queued one (waiting up to ``timeout``)."""
        assert self._queue is not None
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[tuple[Sequence[Any], asyncio.Future]]:
        """Requests for one batch: never more than ``max_size`` rows unless one request alone
        has more (a request is never split); the one that does not fit waits for the next."""
        first = await self._next(None)
        assert first is not None
        batch, size = [first], len(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_latency_s
        while size < self.max_size:
            item = await self._next(deadline - loop.time())
            if item is None:
                break
            if size + len(item[0]) > self.max_size:
                self._held = item
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [
                (part, future) for part, future in await self._collect() if not future.done()
            ]  # a cancelled request is not computed
            if not batch:
                continue
            self._running = batch
            rows = [row for part, _ in batch for row in part]
            self.stats.batches += 1
            self.stats.rows += len(rows)
            self.stats.largest = max(self.stats.largest, len(rows))
            self._rows_metric.observe(len(rows))
            try:
                proba = await loop.run_in_executor(self._pool, self._run, rows)
            except Exception:  # noqa: BLE001 - isolate the culprit, spare the batch-mates
                log.exception(
                    "batch of %d rows failed; re-running its %d requests one by one",
                    len(rows),
                    len(batch),
                )
                for part, future in batch:
                    try:
                        result = await loop.run_in_executor(self._pool, self._run, part)
                    except Exception as exc:  # noqa: BLE001
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            start = 0
            for part, future in batch:
                if not future.done():
                    future.set_result(proba[start : start + len(part)])
                start += len(part)
