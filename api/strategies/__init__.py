"""Deployment strategies: which variant answers a request, and which ones score it silently.

One module per strategy, each a small class behind :class:`Strategy`; :func:`build` makes the
one serving.yaml names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from api.serving import ServingConfig

DEFAULT_VARIANT = "default"


class Strategy(Protocol):
    """Picks the variant that answers; ``routing_key`` lets a strategy stick to one user."""

    name: str
    primary: str  # the variant /model describes first and whose schema /docs shows
    shadows: list[str]  # variants that score every request after the response is sent

    def choose(self, routing_key: str | None) -> str: ...

    def describe(self, variant: str) -> dict[str, object]:
        """What GET /model shows of this variant's place in the strategy (role, weight)."""
        ...


def build(
    config: ServingConfig,
    state_db: Path | None = None,
    feedback_ttl_s: float = 86400.0,
    state_url: str | None = None,
) -> Strategy:
    """The strategy serving.yaml names, over its variants (the bandit keeps its state in Redis
    at ``state_url`` when one is given, else in the SQLite file ``state_db``)."""
    from api.strategies import bandit, canary, shadow, single

    if config.strategy == "bandit":
        from api.state import open_store

        state = open_store(state_db or Path(".lockserve/state.sqlite"), state_url, feedback_ttl_s)
        return bandit.Bandit.from_config(config, state, feedback_ttl_s)
    kinds = {"single": single.Single, "canary": canary.Canary, "shadow": shadow.Shadow}
    return kinds[config.strategy].from_config(config)
