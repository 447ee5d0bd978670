"""Protocol adapters: each module turns one wire protocol into calls on the core (api/core.py).

A module here is an adapter when it has ``install(app, core, settings)``; the app factory
installs every one it finds, so adding a protocol adds a module and edits no other. An adapter
may also have ``preflight(settings)``, which the server runs once before any worker starts and
which names a problem that must stop it (a port another process holds), or returns None.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def adapters() -> list[ModuleType]:
    """Every adapter module in this package, by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "install", None)):
            found.append(module)
    return found


def preflight(settings: Any) -> str | None:
    """The first problem an adapter's preflight check names, or None."""
    for adapter in adapters():
        check = getattr(adapter, "preflight", None)
        problem = check(settings) if check is not None else None
        if problem is not None:
            return problem
    return None
