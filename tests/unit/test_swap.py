"""Unit: the verified local store a reload publishes to, and a worker's swap to the app built
from it (api/swap.py): bytes re-checked, the old app answers what it holds and then stops,
the acknowledgement comes after that, and a generation that fails leaves the old app serving."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
import weakref

import pytest

from api.app import Verified
from api.resolver import Resolved, ResolvedData, md5_hex
from api.serving import parse
from api.swap import LocalStore, StoreError, Swappable

CONFIG = "strategy: canary\nvariants:\n  a: {rev: v1, weight: 1}\n  b: {rev: v2, weight: 3}\n"


def resolved(data: bytes, rev: str) -> Resolved:
    return Resolved(
        name="m",
        path="models/model.zip",
        md5=md5_hex(data),
        rev=rev,
        commit="c" * 40,
        source="cache",
        data=data,
        metrics={"accuracy": 0.9},
        timings_ms={"lock_ms": 1.5},
    )


def verified(a: bytes = b"model a", b: bytes = b"model b") -> Verified:
    table = ResolvedData(
        path="scores",
        md5="d" * 32 + ".dir",
        rev="v2",
        commit="c" * 40,
        source="remote",
        files={"part.0.parquet": b"rows 0", "part.1.parquet": b"rows 1"},
    )
    return Verified(parse(CONFIG), {"a": resolved(a, "v1"), "b": resolved(b, "v2")}, table)


def test_a_published_generation_reads_back_whole(tmp_path):
    store = LocalStore(tmp_path)
    assert store.current() == 0
    first = store.publish(verified())
    second = store.publish(verified(b"model a2"))
    assert (first, second, store.current()) == (1, 2, 2)
    got = store.read(1)
    assert got == verified()
    assert store.read(2).models["a"].data == b"model a2"


def test_bytes_that_changed_in_the_store_are_refused(tmp_path):
    store = LocalStore(tmp_path)
    generation = store.publish(verified())
    blob = tmp_path / "blobs" / md5_hex(b"model b")
    blob.write_bytes(b"model B")
    with pytest.raises(StoreError, match=f"blob {md5_hex(b'model b')} holds other bytes"):
        store.read(generation)
    blob.unlink()
    with pytest.raises(StoreError, match=f"blob {md5_hex(b'model b')}"):
        store.read(generation)


def test_a_manifest_naming_other_bytes_than_its_md5_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    lying = verified()
    models = dict(lying.models)
    models["a"] = Resolved(**{**vars(models["a"]), "md5": "0" * 32})
    generation = store.publish(Verified(lying.config, models, lying.lookup))
    with pytest.raises(StoreError, match="variant 'a'.*not md5 0{32}"):
        store.read(generation)


def test_prune_keeps_what_the_current_generation_names(tmp_path):
    store = LocalStore(tmp_path)
    store.publish(verified(b"old a", b"old b"))
    store.ack(1, "ok")
    current = store.publish(verified())
    store.prune(current)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["2.json"]
    named = {md5_hex(x) for x in (b"model a", b"model b", b"rows 0", b"rows 1")}
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == named
    assert list((tmp_path / "acks").iterdir()) == []
    assert store.read(current) == verified()


def test_acks_are_read_per_worker(tmp_path):
    store = LocalStore(tmp_path)
    store.ack(3, "ok")
    assert store.acks(3, {os.getpid(), 1}) == {os.getpid(): "ok"}
    assert store.acks(4, {os.getpid()}) == {}


class FakeApp:
    """An ASGI app that records its lifespan and the requests it answered; a request to
    /slow waits for ``release``."""

    def __init__(self, name: str, fail_start: bool = False) -> None:
        self.name, self.fail_start = name, fail_start
        self.events: list[str] = []
        self.release = asyncio.Event()
        self.router = self

    def lifespan_context(self, app: FakeApp):
        @contextlib.asynccontextmanager
        async def lifespan():
            if self.fail_start:
                raise RuntimeError(f"{self.name} cannot start")
            self.events.append("start")
            yield
            self.events.append("stop")

        return lifespan()

    async def __call__(self, scope, receive, send) -> None:
        if scope["path"] == "/slow":
            await self.release.wait()
        self.events.append(scope["path"])
        await send({"type": "answer", "by": self.name})


async def call(app: Swappable, path: str) -> str:
    answers: list[dict] = []

    async def send(message: dict) -> None:
        answers.append(message)

    await app({"type": "http", "path": path}, None, send)
    return answers[0]["by"]


class Lifespan:
    """Drives an app's lifespan as a server does (startup, later shutdown) and records the
    message types the app sends back."""

    def __init__(self, app: Swappable) -> None:
        self.app, self.inbox, self.sent = app, asyncio.Queue(), []

    async def _send(self, message: dict) -> None:
        self.sent.append(message["type"])

    async def start(self) -> None:
        await self.inbox.put({"type": "lifespan.startup"})
        self.task = asyncio.create_task(self.app({"type": "lifespan"}, self.inbox.get, self._send))

    async def started(self) -> None:
        while not self.sent:
            await asyncio.sleep(0.01)

    async def stop(self) -> list[str]:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.task
        return self.sent


def test_a_swap_serves_the_new_app_after_the_old_one_has_finished(tmp_path):
    store = LocalStore(tmp_path)
    old, new = FakeApp("old"), FakeApp("new")
    built: list[Verified] = []

    def build(got: Verified) -> FakeApp:
        built.append(got)
        return new

    async def scenario() -> None:
        swappable = Swappable(old, store, store.publish(verified()), build, collect=gc.collect)
        await swappable._live.start()
        assert await call(swappable, "/a") == "old"
        slow = asyncio.create_task(call(swappable, "/slow"))
        await asyncio.sleep(0.01)
        generation = store.publish(verified(b"model a2"))
        swap = asyncio.create_task(swappable.swap(generation))
        while swappable.app is not new:
            await asyncio.sleep(0.01)
        assert await call(swappable, "/b") == "new"  # while the old app still holds /slow
        assert old.events == ["start", "/a"] and store.acks(generation, {os.getpid()}) == {}
        old.release.set()
        assert await slow == "old"
        assert await swap is True
        assert old.events == ["start", "/a", "/slow", "stop"]
        assert store.acks(generation, {os.getpid()}) == {os.getpid(): "ok"}
        assert swappable.generation == generation
        assert built[0].models["a"].data == b"model a2"

    asyncio.run(scenario())
    assert new.events == ["start", "/b"]


def test_a_generation_that_fails_leaves_the_old_app_serving(tmp_path):
    store = LocalStore(tmp_path)
    old = FakeApp("old")

    async def scenario() -> None:
        swappable = Swappable(
            old, store, store.publish(verified()), lambda _: FakeApp("x", True), collect=gc.collect
        )
        await swappable._live.start()
        generation = store.publish(verified(b"model a2"))
        assert await swappable.swap(generation) is False
        assert await call(swappable, "/a") == "old"
        assert swappable.generation == 1
        assert store.acks(generation, {os.getpid()}) == {os.getpid(): "refused: x cannot start"}

    asyncio.run(scenario())
    assert old.events == ["start", "/a"]


def test_the_lifespan_starts_the_app_and_watches_for_generations(tmp_path, monkeypatch):
    monkeypatch.setattr("api.swap.POLL_S", 0.01)
    store = LocalStore(tmp_path)
    old, new = FakeApp("old"), FakeApp("new")
    ready: list[bool] = []

    async def scenario() -> None:
        swappable = Swappable(
            old,
            store,
            store.publish(verified()),
            lambda _: new,
            lambda: ready.append(True),
            gc.collect,
        )
        lifespan = Lifespan(swappable)
        await lifespan.start()
        await lifespan.started()
        generation = store.publish(verified(b"model a2"))
        while not store.acks(generation, {os.getpid()}):
            await asyncio.sleep(0.01)
        assert await call(swappable, "/b") == "new"
        assert await lifespan.stop() == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    asyncio.run(scenario())
    assert ready == [True]
    assert old.events == ["start", "stop"] and new.events == ["start", "/b", "stop"]


def test_the_replaced_app_is_let_go(tmp_path):
    """An app holds reference cycles (FastAPI's do): once replaced and stopped, nothing keeps
    it (not even a server's functools.wraps copy of the app's attributes), and the collector
    the worker runs frees it with its models."""
    store = LocalStore(tmp_path)
    gone: list[weakref.ref] = []

    async def scenario() -> None:
        old = FakeApp("old")
        old.cycle = old
        gone.append(weakref.ref(old))
        swappable = Swappable(
            old, store, store.publish(verified()), lambda _: FakeApp("new"), collect=gc.collect
        )
        del old
        # what granian does with the app it serves: functools.wraps copies the app's __dict__
        wrapper = functools.update_wrapper(lambda: None, swappable)
        await swappable._live.start()
        assert await swappable.swap(store.publish(verified(b"model a2"))) is True
        assert gone[0]() is None
        del wrapper

    asyncio.run(scenario())


def test_a_worker_told_to_stop_during_a_swap_finishes_it_first(tmp_path, monkeypatch):
    """SIGTERM while the new app is being built: the swap completes (and is acknowledged),
    then the app that serves is stopped; no app is left started."""
    monkeypatch.setattr("api.swap.POLL_S", 0.01)
    store = LocalStore(tmp_path)
    old, new = FakeApp("old"), FakeApp("new")
    building = asyncio.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def build(_: Verified) -> FakeApp:
            loop.call_soon_threadsafe(building.set)
            time.sleep(0.2)
            return new

        swappable = Swappable(old, store, store.publish(verified()), build, collect=gc.collect)
        lifespan = Lifespan(swappable)
        await lifespan.start()
        generation = store.publish(verified(b"model a2"))
        await building.wait()
        assert await lifespan.stop() == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert store.acks(generation, {os.getpid()}) == {os.getpid(): "ok"}

    asyncio.run(scenario())
    assert old.events == ["start", "stop"] and new.events == ["start", "stop"]


def test_the_watcher_outlives_a_swap_that_raises(tmp_path, monkeypatch):
    """An error after the new app serves (here: the acknowledgement cannot be written) is
    logged; the worker goes on watching and takes the next generation."""
    monkeypatch.setattr("api.swap.POLL_S", 0.01)
    store = LocalStore(tmp_path)
    apps = iter([FakeApp("second"), FakeApp("third")])
    real_ack = store.ack
    failures = [OSError("disk full")]

    def ack(generation: int, status: str) -> None:
        if failures:
            raise failures.pop()
        real_ack(generation, status)

    monkeypatch.setattr(store, "ack", ack)

    async def scenario() -> None:
        swappable = Swappable(
            FakeApp("first"),
            store,
            store.publish(verified()),
            lambda _: next(apps),
            collect=gc.collect,
        )
        await swappable._live.start()
        watcher = asyncio.create_task(swappable._watch())
        store.publish(verified(b"model a2"))
        while swappable.generation != 2:
            await asyncio.sleep(0.01)
        third = store.publish(verified(b"model a3"))
        while not store.acks(third, {os.getpid()}):
            await asyncio.sleep(0.01)
        assert await call(swappable, "/x") == "third"
        watcher.cancel()

    asyncio.run(scenario())
