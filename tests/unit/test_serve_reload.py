"""Unit: the master's side of a reload (api/serve.py: reload, roll_out), against workers that
are threads answering the local store as a worker would: reloaded once every worker has
swapped; a worker that refuses puts every worker back on the previous models; a worker that
dies is not waited for; SIGTERM during the reload, or an error after the build, refuses it and
the service goes on."""

from __future__ import annotations

import json
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

import api.serve as serve
from api.swap import LocalStore
from tests.unit.test_swap import verified


class Worker:
    """What the master sees of a worker process: its index, pid, exit code, liveness."""

    def __init__(self, idx: int, pid: int) -> None:
        self.idx, self.alive = idx, True
        self.inner = types.SimpleNamespace(pid=pid, exitcode=None)

    def is_alive(self) -> bool:
        return self.alive


class App:
    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.state = types.SimpleNamespace(verified=verified(tag))


class Master:
    """The attributes of api.serve's server a reload uses, with workers that answer every
    generation the store publishes (``answers``: pid -> what it answers; None: silent)."""

    def __init__(self, root: Path, answers: dict[int, str | None]) -> None:
        self.store = LocalStore(root / "store")
        self.pidfile = root / "server.pid"
        self.wrks = [Worker(i, pid) for i, pid in enumerate(answers)]
        self.answers = answers
        self.interrupt_signal = False
        self.interrupt_children: list[int] = []
        self.main_loop_interrupt = threading.Event()
        self.behind: set[int] = set()
        self.respawned: list[list[int]] = []
        self.current = self.swappable(App(b"first"), self.store.publish(verified(b"first")))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def swappable(self, app: App, generation: int) -> Any:
        return types.SimpleNamespace(app=app, generation=generation)

    def _respawn_workers(self, workers: list[int], *args: Any) -> None:
        self.respawned.append(list(workers))

    def _answer(self) -> None:
        seen: set[tuple[int, int]] = set()
        while not self._stop.is_set():
            generation = self.store.current()
            for worker in self.wrks:
                answer = self.answers[worker.inner.pid]
                key = (generation, worker.inner.pid)
                if worker.alive and answer is not None and key not in seen:
                    ack = self.store.root / "acks" / f"{generation}.{worker.inner.pid}"
                    ack.write_text(answer)
                    seen.add(key)
            time.sleep(0.01)

    def state(self) -> dict[str, Any]:
        return json.loads(Path(f"{self.pidfile}.state.json").read_text())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture()
def reload_with(tmp_path, monkeypatch):
    """``reload_with(answers, *builds)``: a master whose workers answer ``answers`` (pid ->
    answer), reloaded once for each of ``builds`` (what api.main.build returns in turn: an app,
    a callable making one, or an exception it raises); the master, its workers stopped."""
    builds: list[Any] = []

    def build() -> App:
        got = builds.pop(0)
        if isinstance(got, Exception):
            raise got
        return got() if callable(got) else got

    monkeypatch.setitem(__import__("sys").modules, "api.main", types.SimpleNamespace(build=build))
    monkeypatch.setattr("api.reload.served", lambda app: {"default": {"md5": app.tag.decode()}})
    monkeypatch.setattr(serve, "ACK_S", 2.0)
    monkeypatch.setattr(serve, "frozen", lambda: None)  # no gc.freeze in the test process
    monkeypatch.setattr("api.app.release_replaced", lambda: None)

    def run(master: Master | dict[int, str | None], *apps: Any) -> Master:
        if not isinstance(master, Master):
            master = Master(tmp_path, master)
        try:
            for app in apps:
                builds.append(app)
                serve.reload(master, None, None)
        finally:
            master.close()
        return master

    return run


def test_reloaded_once_every_worker_has_swapped(reload_with):
    master = reload_with({101: "ok", 102: "ok"}, App(b"second"))
    assert master.state()["status"] == "reloaded"
    assert master.state()["variants"] == {"default": {"md5": "second"}}
    assert master.current.app.tag == b"second" and master.respawned == []
    assert master.store.read(master.store.current()).models["a"].data == b"second"


def test_a_worker_that_refuses_puts_every_worker_back(reload_with):
    master = reload_with({101: "ok", 102: "refused: port taken"}, App(b"second"))
    assert master.state()["status"] == "refused"
    assert master.state()["reason"] == "worker 102: refused: port taken"
    assert master.current.app.tag == b"first"  # workers forked from now on serve it
    assert master.store.read(master.store.current()).models["a"].data == b"first"


def test_a_worker_that_dies_is_not_waited_for(tmp_path, reload_with):
    master = Master(tmp_path, {101: "ok", 102: None})
    master.wrks[1].alive = False  # died: granian's watcher marked it for the serve loop
    master.interrupt_children.append(1)
    started = time.monotonic()
    reload_with(master, App(b"second"))
    assert time.monotonic() - started < serve.ACK_S
    assert master.state()["status"] == "reloaded" and master.respawned == []
    assert master.main_loop_interrupt.is_set()  # the serve loop replaces it, from the new app


def test_a_silent_worker_is_replaced_after_the_wait(reload_with):
    master = reload_with({101: "ok", 102: None}, App(b"second"))
    assert master.state()["status"] == "refused"
    assert "worker(s) [102] did not swap" in master.state()["reason"]
    assert master.respawned == [[1]] and master.current.app.tag == b"first"


def test_sigterm_during_the_build_publishes_nothing(tmp_path, reload_with):
    master = Master(tmp_path, {101: "ok"})

    def stopping() -> App:
        master.interrupt_signal = True
        return App(b"second")

    reload_with(master, stopping)
    assert master.state() | {"at": 0, "pid": 0} == {
        "at": 0,
        "pid": 0,
        "seq": 1,
        "status": "refused",
        "reason": "the server is stopping",
    }
    assert master.store.current() == 1 and master.current.app.tag == b"first"


def test_a_bad_build_or_an_error_after_it_keeps_the_service(tmp_path, reload_with, monkeypatch):
    master = Master(tmp_path, {101: "ok"})
    reload_with(master, ValueError("serving.yaml: variants.a.rev: missing"))
    assert master.state()["reason"] == "serving.yaml: variants.a.rev: missing"

    def full(_: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(master.store, "publish", full)
    reload_with(master, App(b"second"))
    assert master.state()["status"] == "refused"
    assert master.state()["reason"] == "OSError: [Errno 28] No space left on device"
    assert master.current.app.tag == b"first"
