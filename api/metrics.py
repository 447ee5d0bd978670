"""Prometheus metrics (prometheus-client): requests, latency, shadow, bandit, batch sizes.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before anything imports prometheus-client
(api/gunicorn_conf.py), so every worker writes its samples there and /metrics adds them up.
"""

from __future__ import annotations

import os

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
LATENCY = Histogram(
    "lockserve_request_seconds",
    "Time to answer a request",
    ["path", "variant", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
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


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics: all workers' samples in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
