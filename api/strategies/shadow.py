"""Shadow (silent): the primary answers; shadow variants score the same instances afterwards.

The shadow work happens off the request path (api/shadowing.py), so a slow or failing shadow
never changes a response, its status or its latency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.serving import ServingConfig


class Shadow:
    name = "shadow"

    def __init__(self, primary: str, shadows: list[str]) -> None:
        self.primary = primary
        self.shadows = shadows

    @classmethod
    def from_config(cls, config: ServingConfig) -> Shadow:
        primary = next(n for n, v in config.variants.items() if v.role == "primary")
        return cls(primary, [n for n, v in config.variants.items() if v.role == "shadow"])

    def choose(self, routing_key: str | None) -> str:
        return self.primary

    def describe(self, variant: str) -> dict[str, object]:
        return {"role": "primary" if variant == self.primary else "shadow"}
