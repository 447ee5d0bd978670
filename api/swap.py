"""Reload without a restart: a verified local store the server's master publishes to, and the
ASGI app each worker serves through, which swaps in a new app built from that store.

The master resolves and verifies every model serving.yaml pins (api/app.py's ``Verified``),
then publishes the bytes to the store (one file per md5, written whole, then renamed) and a
manifest naming them under the next generation number. Each worker notices the new generation,
reads the bytes back (md5 re-checked, no repository, no remote), builds the new app in a
thread while the old one goes on answering, starts it, and swaps: requests from then on reach
the new app, the old one finishes what it holds and is stopped. No connection is closed, so no
client sees a reset. The worker acknowledges each generation once the replaced app has
stopped (``ok``, or why it could not swap), and the master reports the reload once every worker
has.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api import serving
from api.logs import FIELDS
from api.resolver import Resolved, ResolvedData, md5_hex

log = logging.getLogger("lockserve.swap")

POLL_S = 0.2  # how often a worker looks for a new generation
DRAIN_S = 30.0  # at most this long for the replaced app's requests to finish


class StoreError(Exception):
    """The local store does not hold what its manifest names (or the bytes differ)."""


class LocalStore:
    """Generations of verified bytes in one directory: ``blobs/<md5>``, ``<n>.json`` manifests,
    ``current`` (the newest generation's number) and ``acks/<n>.<pid>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._published = 0  # the last generation this process published
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "acks").mkdir(exist_ok=True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # a cleaner may have removed it
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_bytes(data)
        partial.replace(path)

    def _blob(self, data: bytes) -> str:
        md5 = md5_hex(data)
        path = self.root / "blobs" / md5
        if not path.exists():
            self._write(path, data)
        return md5

    def _bytes(self, md5: str) -> bytes:
        try:
            data = (self.root / "blobs" / md5).read_bytes()
        except OSError as exc:
            raise StoreError(f"local store {self.root}: blob {md5}: {exc.strerror}") from None
        if md5_hex(data) != md5:
            raise StoreError(f"local store {self.root}: blob {md5} holds other bytes")
        return data

    def current(self) -> int:
        """The newest published generation (0 before any)."""
        try:
            return int((self.root / "current").read_text())
        except (OSError, ValueError):
            return 0

    def publish(self, verified: Any) -> int:
        """Write ``verified`` (an api.app.Verified) as the next generation; its number."""
        models = {}
        for name, got in verified.models.items():
            fields = {k: v for k, v in vars(got).items() if k != "data"}
            models[name] = {**fields, "blob": self._blob(got.data)}
        table = None
        if verified.lookup is not None:
            fields = {k: v for k, v in vars(verified.lookup).items() if k != "files"}
            files = {rel: self._blob(data) for rel, data in verified.lookup.files.items()}
            table = {**fields, "files": files}
        generation = self._published = max(self._published, self.current()) + 1
        manifest = {
            "config": verified.config.model_dump(mode="json", exclude_unset=True),
            "models": models,
            "lookup": table,
        }
        self._write(self.root / f"{generation}.json", json.dumps(manifest).encode())
        self._write(self.root / "current", str(generation).encode())
        return generation

    def read(self, generation: int) -> Any:
        """Generation ``generation`` as an api.app.Verified, every blob's md5 re-checked."""
        from api.app import Verified

        try:
            manifest = json.loads((self.root / f"{generation}.json").read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"local store {self.root}: generation {generation}: {exc}") from None
        models = {}
        for name, fields in manifest["models"].items():
            fields = dict(fields)
            blob = fields.pop("blob")  # the md5 of its bytes, which _bytes checks
            if blob != fields["md5"]:
                raise StoreError(
                    f"variant {name!r}: the local store's bytes are not md5 {fields['md5']}"
                )
            models[name] = Resolved(**fields, data=self._bytes(blob))
        table = None
        if manifest["lookup"] is not None:
            fields = dict(manifest["lookup"])
            files = {rel: self._bytes(md5) for rel, md5 in fields.pop("files").items()}
            table = ResolvedData(**fields, files=files)
        config = serving.ServingConfig.model_validate(manifest["config"])
        return Verified(config, models, table)

    def ack(self, generation: int, status: str) -> None:
        """A worker's answer for ``generation``: ``ok``, or why it goes on with the old app."""
        self._write(self.root / "acks" / f"{generation}.{os.getpid()}", status.encode())

    def acks(self, generation: int, pids: set[int]) -> dict[int, str]:
        """The answers the workers ``pids`` have given for ``generation`` so far."""
        out = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                out[pid] = (self.root / "acks" / f"{generation}.{pid}").read_text()
        return out

    def prune(self, keep: int) -> None:
        """Remove what generations before ``keep`` alone need (manifests, acks, blobs) and any
        file a writer left half-written."""

        def generation(name: str) -> int:
            head = name.split(".")[0]
            return int(head) if head.isdigit() else -1  # not ours, or a partial file

        named: set[str] = set()
        for path in self.root.glob("*.json"):
            if generation(path.name) < keep:
                path.unlink(missing_ok=True)
                continue
            manifest = json.loads(path.read_text())
            named.update(m["blob"] for m in manifest["models"].values())
            if manifest["lookup"] is not None:
                named.update(manifest["lookup"]["files"].values())
        for blob in (self.root / "blobs").iterdir():
            if blob.name not in named:
                blob.unlink(missing_ok=True)
        for ack in (self.root / "acks").iterdir():
            if generation(ack.name) < keep:
                ack.unlink(missing_ok=True)


class _Live:
    """One app a worker serves, its lifespan, and how many requests it holds."""

    def __init__(self, app: Any, generation: int) -> None:
        self.app, self.generation = app, generation
        self.requests = 0
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        await self.stack.enter_async_context(self.app.router.lifespan_context(self.app))

    async def stop(self) -> None:
        await self.stack.aclose()


def refreeze() -> None:
    """After a replaced app is let go: collect it (what the master froze before forking the
    worker includes the first app, so unfreeze first), then freeze what is left again, out of
    the collector's way as before."""
    from api.app import release_replaced

    gc.unfreeze()
    release_replaced()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # glibc: give freed heap pages back
        ctypes.CDLL(None).malloc_trim(0)


class Swappable:
    """The ASGI app a worker serves: forwards to the live app, runs its lifespan, and swaps in
    the store's newer generations as they are published (built by ``build(verified)``); once a
    replaced app has stopped, ``collect`` lets it go.

    No instance dict: a server that wraps its app with functools.wraps (granian does) copies
    the app's ``__dict__`` into the wrapper, which would hold the first app for good."""

    __slots__ = (
        "_build",
        "_closing",
        "_collect",
        "_live",
        "_on_ready",
        "_refused",
        "_store",
        "_swapping",
        "_watcher",
    )

    def __init__(
        self,
        app: Any,
        store: LocalStore,
        generation: int,
        build: Callable[[Any], Any],
        on_ready: Callable[[], None] | None = None,
        collect: Callable[[], None] = refreeze,
    ) -> None:
        self._live = _Live(app, generation)
        self._store, self._build, self._on_ready = store, build, on_ready
        self._collect = collect
        self._refused: set[int] = set()
        self._watcher: asyncio.Task | None = None
        self._swapping = False
        self._closing = False

    @property
    def app(self) -> Any:
        return self._live.app

    @property
    def generation(self) -> int:
        return self._live.generation

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        live = self._live
        live.requests += 1
        try:
            await live.app(scope, receive, send)
        finally:
            live.requests -= 1

    async def _lifespan(self, receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        try:
            await self._live.start()
        except Exception as exc:  # noqa: BLE001 - reported to the server, which stops
            log.exception("worker %d could not start", os.getpid())
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self._watcher = asyncio.create_task(self._watch())
        if self._on_ready is not None:
            self._on_ready()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self._closing = True
        if not self._swapping:  # a swap under way is finished first (it is bounded)
            self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        await self._live.stop()
        await send({"type": "lifespan.shutdown.complete"})

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(POLL_S)
            generation = self._store.current()
            if generation > self._live.generation and generation not in self._refused:
                self._swapping = True
                try:
                    await self.swap(generation)
                except Exception:  # noqa: BLE001 - the worker goes on serving what it has
                    log.exception("worker %d: swap to generation %d", os.getpid(), generation)
                finally:
                    self._swapping = False

    async def swap(self, generation: int) -> bool:
        """Build, start and serve generation ``generation``; the replaced app drains and stops
        before the store hears ``ok``. On failure the live app goes on serving and the store
        hears why."""
        started = time.perf_counter()
        try:
            verified = await asyncio.to_thread(self._store.read, generation)
            new = _Live(await asyncio.to_thread(self._build, verified), generation)
            del verified
            await new.start()
        except Exception as exc:  # noqa: BLE001 - a reload must never take the worker down
            self._refused.add(generation)
            log.error(
                "worker %d keeps generation %d: generation %d failed: %s",
                os.getpid(),
                self._live.generation,
                generation,
                exc,
            )
            self._store.ack(generation, f"refused: {exc}")
            return False
        old, self._live = self._live, new
        del new
        log.info(
            "worker %d serves generation %d (%.0f ms)",
            os.getpid(),
            generation,
            (time.perf_counter() - started) * 1000,
            extra={FIELDS: {"generation": generation}},
        )
        await self._retire(old)
        del old  # nothing holds the replaced app now: the collector can free it
        try:
            self._collect()
        except Exception:  # noqa: BLE001 - the new app serves: that is what the ack says
            log.exception("worker %d: letting the replaced app go", os.getpid())
        self._store.ack(generation, "ok")
        return True

    async def _retire(self, old: _Live) -> None:
        """Wait for the replaced app's requests (at most DRAIN_S), then stop it."""
        deadline = time.monotonic() + DRAIN_S
        while old.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if old.requests:
            log.warning(
                "worker %d stops generation %d with %d request(s) still running after %g s",
                os.getpid(),
                old.generation,
                old.requests,
                DRAIN_S,
            )
        try:
            await old.stop()
        except Exception:  # noqa: BLE001 - the new app serves; the old one is let go anyway
            log.exception("worker %d: stopping generation %d", os.getpid(), old.generation)
