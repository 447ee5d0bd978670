"""A stop signal that reaches a freshly forked worker before its own handlers are set still
stops it (gunicorn_conf.post_fork), instead of being queued by the master's inherited handler
and lost, which left the worker serving until the graceful timeout killed it."""

import functools
import importlib
import os
import queue
import signal
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from gunicorn.arbiter import Arbiter


@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("LOCKSERVE_PIDFILE", str(tmp_path / "gunicorn.pid"))
    return importlib.import_module("api.gunicorn_conf")


def in_child(body: Callable[[], object]) -> tuple[str, int]:
    """Run body() in a forked process: ('signal', n) if a signal ended it, else ('exit', code)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's lines are seen through its exit status
        try:
            body()
        except BaseException:  # noqa: BLE001 - any failure is a non-zero exit
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


def master_like(queued: tuple[int, ...] = ()) -> SimpleNamespace:
    """The master as a forked worker sees it: gunicorn's own handler, which only puts a signal
    in the master's queue (the worker's copy of it)."""
    master = SimpleNamespace(SIG_QUEUE=queue.SimpleQueue())
    for sig in queued:
        master.SIG_QUEUE.put_nowait(sig)
    handler = functools.partial(Arbiter.signal, master)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, handler)
    return master


def test_a_sigterm_received_before_the_worker_handles_signals_stops_it(conf):
    def body():
        master = master_like()
        os.kill(os.getpid(), signal.SIGTERM)  # queued by the inherited handler, not acted on
        conf.post_fork(master, object())

    assert in_child(body) == ("signal", signal.SIGTERM)


def test_a_stop_pending_in_the_master_when_it_forked_stops_the_worker(conf):
    assert in_child(lambda: conf.post_fork(master_like([signal.SIGINT]), object())) == (
        "signal",
        signal.SIGINT,
    )


def test_a_worker_with_no_stop_queued_goes_on_and_a_later_sigterm_ends_it(conf):
    def body():
        conf.post_fork(master_like([signal.SIGHUP]), object())
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)

    assert in_child(lambda: conf.post_fork(master_like([signal.SIGHUP]), object())) == ("exit", 0)
    assert in_child(body) == ("signal", signal.SIGTERM)
