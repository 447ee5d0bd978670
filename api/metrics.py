"""Prometheus metrics (prometheus-client): requests, latency, shadow, bandit, batch sizes.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before anything imports prometheus-client
(api/gunicorn_conf.py), so every worker writes its samples there and /metrics adds them up.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("lockserve_requests", "HTTP requests answered", ["path", "variant", "status"])
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY = Histogram(
    "lockserve_request_seconds",
    "Time to answer a request",
    ["path", "variant", "status"],
    buckets=LATENCY_BUCKETS,
)
SHADOW = Counter(
    "lockserve_shadow_instances", "Instances scored by a shadow variant", ["variant", "outcome"]
)
SHADOW_DROPPED = Counter(
    "lockserve_shadow_dropped", "Shadow scorings dropped (queue full)", ["variant"]
)
BANDIT_PULLS = Counter("lockserve_bandit_pulls", "Requests routed by the bandit", ["variant"])
BANDIT_REWARD = Counter("lockserve_bandit_reward", "Reward credited by feedback", ["variant"])
BANDIT_FEEDBACK = Counter("lockserve_bandit_feedback", "Feedback counted", ["variant"])
BATCH_ROWS = Histogram(
    "lockserve_batch_rows",
    "Rows per adaptive batch",
    ["variant"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)


FLUSH_S = 0.5  # a worker's requests reach the Prometheus values at most this late


class RequestTally:
    """REQUESTS and LATENCY for this process, added up between writes.

    Each update of a Prometheus value takes a lock and, in multiprocess mode, writes a
    memory-mapped file; a request would make four. Instead a request adds to a dict, and the
    sums reach the values FLUSH_S after the first request since the last write (the event loop
    does it), when this process renders /metrics, and when the app stops. A latency lands in the
    bucket Histogram.observe would put it in.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str], list[float]] = {}
        self._bounds = (*LATENCY_BUCKETS, float("inf"))
        self._lock = threading.Lock()  # /metrics renders (and flushes) in a worker thread
        self._due: asyncio.AbstractEventLoop | None = None  # the loop a write is due on

    def add(self, labels: tuple[str, str, str], seconds: float) -> None:
        """Count one request with ``labels`` (path, variant, status) that took ``seconds``."""
        with self._lock:
            entry = self._pending.get(labels)
            if entry is None:
                entry = self._pending[labels] = [0.0] * (len(self._bounds) + 1)
            entry[0] += seconds
            entry[1 + bisect.bisect_left(self._bounds, seconds)] += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to write later: now
            self.flush()
            return
        if self._due is not loop:  # none due, or due on a loop that has gone
            self._due = loop
            loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Write what was added since the last write to the Prometheus values."""
        with self._lock:
            self._due = None
            pending, self._pending = self._pending, {}
        for labels, (total, *counts) in pending.items():
            REQUESTS.labels(*labels).inc(sum(counts))
            child = LATENCY.labels(*labels)
            child._sum.inc(total)  # noqa: SLF001 - what observe() does, for many at once
            for bucket, count in zip(child._buckets, counts, strict=True):  # noqa: SLF001
                if count:
                    bucket.inc(count)


TALLY = RequestTally()


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics: all workers' samples in multiprocess mode (this
    process's latest requests included)."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
