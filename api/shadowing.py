"""Shadow scoring off the request path: a bounded queue and one background task per worker,
started and stopped by the app's lifespan.

The request only enqueues (dropping and counting when the queue is full); the shadow model
runs in its own thread after the response has gone. Each result is one JSON log line with the
request id and both answers: for classification both labels and their agreement, for
regression both values and their largest absolute difference.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from api import metrics
from api.backends import decide
from api.logs import FIELDS
from api.store import ModelStore

log = logging.getLogger("lockserve.shadow")


@dataclass
class ShadowStats:
    scored: int = 0
    agreed: int = 0
    failed: int = 0
    dropped: int = 0
    abs_diff: float = 0.0  # regression: sum of |primary - shadow|

    def as_dict(self) -> dict[str, float]:
        rate = self.agreed / self.scored if self.scored else 0.0
        mean_diff = self.abs_diff / self.scored if self.scored else 0.0
        return {
            "scored": self.scored,
            "agreement": round(rate, 4),
            "mean_abs_diff": round(mean_diff, 6),
            "failed": self.failed,
            "dropped": self.dropped,
        }


class ShadowRunner:
    """Scores requests with shadow variants after they were answered."""

    def __init__(self, store: ModelStore, max_queue: int = 1000) -> None:
        self.store = store
        self.max_queue = max_queue
        self.stats: dict[str, ShadowStats] = {}
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop scoring; what is still queued is counted as dropped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            variant = self._queue.get_nowait()[0]
            self.stats.setdefault(variant, ShadowStats()).dropped += 1
            metrics.SHADOW_DROPPED.labels(variant).inc()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._queue, self._task, self._pool = None, None, None

    def describe(self, variant: str) -> dict[str, float]:
        return self.stats.get(variant, ShadowStats()).as_dict()

    def submit(
        self, variant: str, instances: list[Any], request_id: str | None, answered: list[Any]
    ) -> None:
        """Queue a shadow scoring; never waits, never raises into the request (not running or
        full: dropped and counted)."""
        stats = self.stats.setdefault(variant, ShadowStats())
        try:
            if self._queue is None:
                raise asyncio.QueueFull
            self._queue.put_nowait((variant, instances, request_id, answered))
        except asyncio.QueueFull:
            stats.dropped += 1
            metrics.SHADOW_DROPPED.labels(variant).inc()

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            variant, instances, request_id, answered = await self._queue.get()
            stats = self.stats[variant]
            model = self.store.get(variant)
            try:
                output = await loop.run_in_executor(self._pool, model.backend.predict, instances)
            except Exception as exc:  # noqa: BLE001 - a failing shadow only logs
                stats.failed += 1
                metrics.SHADOW.labels(variant, "failed").inc(len(instances))
                log.warning(
                    "shadow %s failed on request %s: %s",
                    variant,
                    request_id,
                    exc,
                    extra={FIELDS: {"request_id": request_id, "variant": variant}},
                )
                continue
            shadow = decide(model.backend.task, model.backend.classes, output)
            fields: dict[str, Any] = {
                "request_id": request_id,
                "variant": variant,
                "md5": model.md5,
            }
            kind = "labels" if model.backend.task == "classification" else "values"
            fields[f"primary_{kind}"], fields[f"shadow_{kind}"] = answered, shadow
            if model.backend.task == "classification":
                agree = sum(a == b for a, b in zip(answered, shadow, strict=True))
                fields["agreement"] = agree / len(shadow)
            else:
                diffs = [abs(a - b) for a, b in zip(answered, shadow, strict=True)]
                agree = sum(d == 0.0 for d in diffs)
                stats.abs_diff += sum(diffs)
                fields["max_abs_diff"] = max(diffs)
            stats.scored += len(shadow)
            stats.agreed += agree
            metrics.SHADOW.labels(variant, "agree").inc(agree)
            metrics.SHADOW.labels(variant, "disagree").inc(len(shadow) - agree)
            log.info(
                "shadow %s on request %s: %d/%d agree",
                variant,
                request_id,
                agree,
                len(shadow),
                extra={FIELDS: fields},
            )
