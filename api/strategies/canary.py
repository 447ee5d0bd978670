"""Canary: each variant answers its weight's share of requests, sticky per routing key.

A request with an ``X-Routing-Key`` always lands on the same variant (the key's hash picks a
point in [0, 1) that the cumulative weights divide), so one user sees one model; without a key
the point is random.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.serving import ServingConfig


def key_point(routing_key: str) -> float:
    """A stable, uniform point in [0, 1) for a routing key."""
    digest = hashlib.blake2b(routing_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Canary:
    name = "canary"

    def __init__(self, weights: dict[str, float], seed: int | None = None) -> None:
        total = sum(weights.values())
        self.weights = {name: w / total for name, w in weights.items()}
        self._names = list(self.weights)
        self.primary = max(self._names, key=lambda n: self.weights[n])
        bounds, running = [], 0.0
        for name in self._names:
            running += self.weights[name]
            bounds.append(running)
        bounds[-1] = 1.0
        self._bounds = bounds
        self._random = random.Random(seed)
        self.shadows: list[str] = []

    @classmethod
    def from_config(cls, config: ServingConfig) -> Canary:
        return cls({name: v.weight or 0.0 for name, v in config.variants.items()})

    def choose(self, routing_key: str | None) -> str:
        point = key_point(routing_key) if routing_key else self._random.random()
        return self._names[bisect.bisect_right(self._bounds, point)]

    def describe(self, variant: str) -> dict[str, object]:
        return {"role": "canary", "weight": round(self.weights[variant], 6)}
