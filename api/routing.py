"""Deployment strategies: which variant answers a request. Single is the only one for now."""

from typing import Protocol

DEFAULT_VARIANT = "default"


class Strategy(Protocol):
    """Picks the variant that answers; ``routing_key`` lets a strategy stick to one user."""

    name: str

    def choose(self, routing_key: str | None) -> str: ...


class Single:
    """One variant answers every request."""

    name = "single"

    def __init__(self, variant: str = DEFAULT_VARIANT) -> None:
        self.variant = variant

    def choose(self, routing_key: str | None) -> str:
        return self.variant
