"""Multi-armed bandit: epsilon-greedy or Thompson sampling (Beta-Bernoulli), seeded.

Each answered request is remembered (request id -> variant, labels) so that
`POST /feedback` can credit the variant that answered it. The bookkeeping is buffered in
memory and written in batches by a background flush, off the request path, into the shared
state store (api/state.py), whose totals every worker reads back at each flush. The flush
runs from the app's lifespan (:meth:`Bandit.start`); :meth:`Bandit.stop` writes what is still
pending, so shutdown or reload loses no answered request. While the store cannot be reached,
the bandit chooses with the last totals it read (none yet: as with no feedback).
"""

from __future__ import annotations

import asyncio
import random
import time

from api import metrics
from api.serving import Bandit as Options
from api.serving import ServingConfig
from api.state import StateStore, StoreUnavailable, UnknownRequest


class Bandit:
    name = "bandit"

    def __init__(
        self, variants: list[str], state: StateStore, options: Options, max_age_s: float
    ) -> None:
        """``options``: serving.yaml's ``bandit:`` block (its defaults when absent);
        ``max_age_s``: how long an answered request still takes feedback."""
        self.variants = variants
        self.primary = variants[0]
        self.shadows: list[str] = []
        self.algorithm, self.epsilon = options.algorithm, options.epsilon
        self.max_age_s = max_age_s
        self.flush_s = options.flush_ms / 1000
        self._state = state
        self._random = random.Random(options.seed)
        self._pending: list[tuple[str, str, list[str], float]] = []
        self._totals: dict[str, tuple[int, float, int]] = {}
        self._refresh()
        self._flusher: asyncio.Task | None = None

    @classmethod
    def from_config(cls, config: ServingConfig, state: StateStore, max_age_s: float) -> Bandit:
        return cls(list(config.variants), state, config.bandit or Options(), max_age_s)

    def _arm(self, variant: str) -> tuple[int, float, int]:
        return self._totals.get(variant, (0, 0.0, 0))

    def choose(self, routing_key: str | None) -> str:
        if self.algorithm == "epsilon_greedy":
            if self._random.random() < self.epsilon:
                return self._random.choice(self.variants)
            means = []
            for v in self.variants:
                _, reward, feedbacks = self._arm(v)
                means.append(reward / feedbacks if feedbacks else float("inf"))  # try each once
            return self.variants[means.index(max(means))]
        draws = []
        for v in self.variants:
            _, reward, feedbacks = self._arm(v)
            draws.append(self._random.betavariate(1.0 + reward, 1.0 + feedbacks - reward))
        return self.variants[draws.index(max(draws))]

    def observe(self, request_id: str | None, variant: str, answered: list[str]) -> None:
        """Remember who answered; written by the next flush."""
        if request_id is None:
            return
        self._pending.append((request_id, variant, answered, time.time()))
        metrics.BANDIT_PULLS.labels(variant).inc()

    async def start(self) -> None:
        """Flush every ``flush_ms`` on the running loop until :meth:`stop`."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def stop(self) -> None:
        """Stop the periodic flush, then write what is still pending."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await asyncio.get_running_loop().run_in_executor(None, self.flush)

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_s)
            await loop.run_in_executor(None, self.flush)

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        self._state.record(rows)
        self._refresh()

    def _refresh(self) -> None:
        """Read the totals back; keep the last ones while the store is unreachable."""
        try:
            self._totals = self._state.totals()
        except StoreUnavailable:
            pass  # the store logs the outage, once

    def feedback(
        self, request_id: str, reward: float | None, labels: list[str] | None
    ) -> tuple[str, float]:
        """Credit the variant that answered ``request_id``; runs in a worker thread."""
        for attempt in range(3):
            try:
                variant, credited = self._state.reward(request_id, reward, labels, self.max_age_s)
            except UnknownRequest:
                if attempt == 2:
                    raise
                if attempt == 0:
                    self.flush()  # this worker may not have written it yet
                else:
                    time.sleep(min(2 * self.flush_s, 1.0))  # nor another worker
            else:
                metrics.BANDIT_REWARD.labels(variant).inc(credited)
                metrics.BANDIT_FEEDBACK.labels(variant).inc()
                return variant, credited
        raise AssertionError("unreachable")

    def describe(self, variant: str) -> dict[str, object]:
        pulls, reward, feedbacks = self._arm(variant)
        return {
            "role": "arm",
            "pulls": pulls,
            "feedbacks": feedbacks,
            "mean_reward": round(reward / feedbacks, 4) if feedbacks else None,
        }
