"""Single: one variant answers every request."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.serving import ServingConfig


class Single:
    name = "single"

    def __init__(self, variant: str) -> None:
        self.variant = self.primary = variant
        self.shadows: list[str] = []

    @classmethod
    def from_config(cls, config: ServingConfig) -> Single:
        return cls(next(iter(config.variants)))

    def choose(self, routing_key: str | None) -> str:
        return self.variant

    def describe(self, variant: str) -> dict[str, object]:
        return {"role": "primary"}
