"""The production server: `python -m api.serve` (`make serve`, the Procfile) runs the app under
granian, the fastest server measured (`make bench` sets it beside gunicorn + uvicorn).

Before it binds, the master resolves, fetches and verifies every model serving.yaml pins and
loads the app (a model that cannot be had: exit 3, one line, never listening), checks the
adapters' preflight (a taken gRPC port: exit 3), publishes the verified bytes to a local
store (api/swap.py) and freezes what it loaded out of the garbage collector's way. granian's
workers, forked after that, serve the loaded app (its weights shared copy-on-write).

SIGHUP (`make reload`) rebuilds the app from serving.yaml in the master, every variant
re-resolved and verified; a bad file or model keeps the old app and the state file says why.
The new bytes go to the local store, and each worker swaps to an app built from them without
closing a connection. SIGTERM: the workers finish their requests, then the master exits.
A worker that dies is replaced (forked from the master's current app) and its live-only
Prometheus samples are dropped. Bind from HOST and PORT, WEB_CONCURRENCY workers.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

STARTED = time.monotonic()
GC_GEN0 = 50_000  # a worker's young-generation threshold (Python's default: 700)
BACKLOG = 1024  # connections the kernel queues for the workers
ACK_S = 120.0  # how long the master waits for every worker to swap
ACCEPT_S = 0.2  # on SIGTERM the workers go on accepting at least this long
ACCEPT_MAX_S = 5.0  # and at most this long, while connections wait in the queue
DRAIN_S = 0.5  # then a moment more, for requests on connections just accepted to be read
PIDFILE = ".lockserve/server.pid"
STOPPED = (0, -signal.SIGTERM, -signal.SIGINT)  # how a worker that was told to stop exits

log = logging.getLogger("lockserve")


def frozen() -> None:
    """Put everything the master holds now (the app, its models, every module) out of the
    garbage collector's reach: workers forked from it never scan or touch those objects, so a
    request's own garbage is all a collection looks at, and the shared pages stay shared."""
    gc.collect()
    gc.freeze()


def running(pidfile: Path) -> int | None:
    """The pid of a live process the pidfile names, if any."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return pid
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() else None


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """The one listening socket (no SO_REUSEPORT: a port in use is an error, not a share)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def queued(listener: socket.socket) -> int:
    """Connections the kernel has completed for a listening TCP socket and no process has
    accepted yet (Linux's TCP_INFO: ``tcpi_unacked`` of a listener); 0 when it cannot tell."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return 0
    return struct.unpack_from("I", info, 24)[0] if len(info) >= 28 else 0


def drain(listener: socket.socket) -> None:
    """Before the workers are told to stop: let them accept (and answer) what waits in the
    queue, for at least ACCEPT_S and at most ACCEPT_MAX_S, then read what was just accepted.
    Closing the last copy of a listener resets every connection still queued on it."""
    started = time.monotonic()
    time.sleep(ACCEPT_S)
    while time.monotonic() - started < ACCEPT_MAX_S and queued(listener):
        time.sleep(0.02)
    time.sleep(DRAIN_S)


def stop_with_master() -> None:
    """In a worker (in a process group of its own, so that a signal to the master's group
    reaches the master alone, which drains and then stops the workers): stop (SIGTERM) when the
    master dies, rather than serve on unsupervised."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def notify_ready() -> None:
    """Tell systemd (Type=notify) the service is ready: the models are verified and loaded and
    the port is bound. Nothing to do outside systemd (no NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def worker_ready() -> None:
    """In a worker whose app has started: how long it took from start to ready."""
    ready_ms = (time.monotonic() - STARTED) * 1000
    log.info(
        "worker %d ready %.0f ms after start",
        os.getpid(),
        ready_ms,
        extra={"fields": {"ready_ms": round(ready_ms, 1)}},
    )


def build_verified(verified: Any) -> Any:
    """A worker's new app, from the bytes the master verified (no repository, no remote)."""
    from api.app import create_app
    from api.settings import Settings

    return create_app(Settings(), verified=verified)


def _granian_logging() -> dict[str, Any]:
    """granian's own lines go through the root logger, as JSON lines like every other."""
    quiet = {"handlers": [], "propagate": True}
    return {"loggers": {"_granian": {**quiet, "level": "INFO"}, "granian.access": quiet}}


def server_class() -> type:
    """granian's multi-process server, with lockserve's reload and worker bookkeeping."""
    from granian.server.mp import MPServer

    from api.swap import LocalStore, Swappable

    class Server(MPServer):
        def __init__(
            self,
            app: Any,
            store: LocalStore | None,
            pidfile: Path,
            listener: socket.socket,
            **kwargs: Any,
        ) -> None:
            super().__init__("api.main:app", pid_file=pidfile, **kwargs)
            self.store, self.pidfile, self.listener = store, pidfile, listener
            self.behind: set[int] = set()  # pids of the workers the last roll-out left behind
            self.current = app  # another app (the benchmarks' HTTP floor) is served as it is
            if store is not None:
                self.current = self.swappable(app, store.publish(app.state.verified))

        def swappable(self, app: Any, generation: int) -> Swappable:
            return Swappable(app, self.store, generation, build_verified, worker_ready)

        def loader(self, _target: str) -> Any:
            with contextlib.suppress(OSError):  # a signal to the master's group: the master's
                os.setpgid(0, 0)
            stop_with_master()
            gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])  # fewer young collections
            return self.current  # in the worker, after the fork: its copy of the master's

        def shutdown(self, exit_code: int = 0) -> None:
            if self._sso is not None:
                drain(self._sso)
            if self.interrupt_signal:  # a worker the signal reached first has not failed
                stopped = {w.idx for w in self.wrks if w.inner.exitcode in STOPPED}
                self.interrupt_children[:] = [
                    i for i in self.interrupt_children if i not in stopped
                ]
            super().shutdown(exit_code)

        def _init_shared_socket(self) -> None:
            """The listening socket main() bound, shared by every worker (granian's default on
            Linux is a socket per worker with SO_REUSEPORT, each with its own queue: a worker
            that dies takes the connections waiting in its queue with it, reset; and a second
            server on the same port would silently take half the traffic)."""
            from granian._granian import SocketHolder

            self._ssp = None
            self._sso = self.listener
            self._shd = SocketHolder(self._sso.fileno(), False, self.backlog)
            self._sfd = self._sso.fileno()

        def _reload(self, spawn_target: Any, target_loader: Any) -> None:
            self.reload_signal = False
            self.respawned_wrks.clear()
            self.main_loop_interrupt.clear()
            if self.store is not None:
                reload(self, spawn_target, target_loader)

        def _respawn_workers(self, workers: Any, *args: Any, **kwargs: Any) -> None:
            from prometheus_client import multiprocess

            gone = [self.wrks[idx].inner.pid for idx in workers]
            super()._respawn_workers(workers, *args, **kwargs)
            for pid in gone:
                multiprocess.mark_process_dead(pid)

    return Server


def reload(server: Any, spawn_target: Any, target_loader: Any) -> None:
    """SIGHUP in the master: rebuild from serving.yaml, publish, wait until every worker has
    swapped, write the state `make reload` reports. Whatever fails, the service goes on with
    the models it served: a worker that cannot swap puts every worker back on them, and the
    reload is refused."""
    from api.reload import state_path, write_state

    try:
        status, fields = _reload(server, spawn_target, target_loader)
    except Exception as exc:  # noqa: BLE001 - a reload must never take the service down
        log.error("reload failed, still serving the previous models: %s", exc)
        status, fields = "refused", {"reason": f"{type(exc).__name__}: {exc}"}
    finally:
        frozen()
    try:
        write_state(state_path(server.pidfile), status, os.getpid(), **fields)
    except OSError as exc:
        log.error("could not write the reload's state: %s", exc)
    if server.interrupt_children:  # a worker died meanwhile: the serve loop replaces it
        server.main_loop_interrupt.set()


def rebuild() -> Any:
    """In a master, on SIGHUP: the app rebuilt from serving.yaml (every variant re-resolved and
    verified), what was frozen unfrozen first so that the app it replaces can go. What build
    raises (a bad file or model, which keeps the old app) is logged and raised."""
    from api.app import release_replaced
    from api.main import build

    gc.unfreeze()
    release_replaced()
    try:
        return build()
    except Exception as exc:
        log.error("reload refused, still serving the previous models: %s", exc)
        raise


def _reload(server: Any, spawn_target: Any, target_loader: Any) -> tuple[str, dict[str, Any]]:
    from api.reload import served

    previous = server.current
    try:
        app = rebuild()
    except Exception as exc:  # noqa: BLE001 - a bad file or model keeps the old app
        return "refused", {"reason": str(exc)}
    if server.interrupt_signal:
        return "refused", {"reason": "the server is stopping"}
    refusal = roll_out(server, app)
    if refusal is None:
        server.store.prune(server.current.generation)
        return "reloaded", {"variants": served(app)}
    log.error("reload refused, back to the previous models: %s", refusal)
    if roll_out(server, previous.app) is not None and not server.interrupt_signal:
        behind = [w.idx for w in server.wrks if w.is_alive() and w.inner.pid in server.behind]
        log.warning("replacing %d worker(s) that could not go back", len(behind))
        server._respawn_workers(behind, spawn_target, target_loader)
    return "refused", {"reason": refusal}


def roll_out(server: Any, app: Any) -> str | None:
    """Publish ``app``'s verified bytes as the next generation, serve it from workers forked
    from now on, and wait (at most ACK_S) until every live worker has swapped to it; None, or
    why not (``server.behind``: the workers that have not)."""
    server.current = server.swappable(app, server.store.publish(app.state.verified))
    generation = server.current.generation
    deadline = time.monotonic() + ACK_S
    while True:
        alive = {w.inner.pid for w in server.wrks if w.is_alive()}
        acks = server.store.acks(generation, alive)
        if len(acks) == len(alive) or server.interrupt_signal or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    server.behind = {pid for pid in alive if acks.get(pid) != "ok"}
    if server.interrupt_signal:
        return "the server is stopping"
    refused = sorted((pid, ack) for pid, ack in acks.items() if ack != "ok")
    if refused:
        return f"worker {refused[0][0]}: {refused[0][1]}"
    if server.behind:
        return f"worker(s) {sorted(server.behind)} did not swap within {ACK_S:g} s"
    return None


def main(argv: list[str] | None = None) -> None:
    """Refuse before binding, or serve until SIGTERM. ``module:app`` serves another ASGI app
    under the same server and settings (the benchmarks' HTTP floor), without reload."""
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else "api.main:app"
    lockserve = target == "api.main:app"
    pidfile = Path(os.environ.get("LOCKSERVE_PIDFILE", PIDFILE))
    own_metrics = "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    def remove_own_metrics() -> None:  # the folder made below, if it was
        if own_metrics and "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

    def refuse(message: str, *args: Any) -> NoReturn:
        log.critical("refusing to start: " + message, *args)
        remove_own_metrics()
        sys.exit(3)

    other = running(pidfile)
    if other is not None:
        from api import logs

        logs.configure()
        refuse(
            "the server with pid %d runs from pidfile %s "
            "(LOCKSERVE_PIDFILE, PORT and LOCKSERVE_GRPC_PORT for a second one)",
            other,
            pidfile,
        )
    if own_metrics:  # before the app imports prometheus-client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lockserve-metrics-")
    pidfile.parent.mkdir(parents=True, exist_ok=True)

    module, _, name = target.partition(":")
    try:
        loaded = importlib.import_module(module)  # api.main: exit 3 if it cannot
    except SystemExit:
        remove_own_metrics()
        raise
    app = getattr(loaded, name)
    if lockserve:
        delattr(loaded, name)  # the server holds it from here: a reload can let it go
    from api.protocols import preflight
    from api.reload import served, state_path, write_state
    from api.settings import Settings
    from api.swap import LocalStore

    settings = Settings()
    problem = preflight(settings) if lockserve else None
    if problem is not None:
        refuse("%s", problem)

    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    try:
        listener = listen(host, port, BACKLOG)
    except OSError as exc:
        refuse("cannot listen on %s:%d: %s", host, port, exc.strerror)
    store = LocalStore(Path(tempfile.mkdtemp(prefix="lockserve-store-"))) if lockserve else None
    level = settings.log_level.lower()
    server = server_class()(
        app,
        store,
        pidfile,
        listener,
        address=host,
        port=port,
        backlog=BACKLOG,
        interface=Interfaces.ASGI,
        workers=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)),
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_dictconfig=_granian_logging(),
        respawn_failed_workers=True,
        # how many requests a worker takes at once (granian's default: backlog / workers);
        # a few (4) spread large, slow requests evenly over the workers (make bench)
        backpressure=int(os.environ["GRANIAN_BACKPRESSURE"])
        if os.environ.get("GRANIAN_BACKPRESSURE")
        else None,
        workers_kill_timeout=int(os.environ.get("GRACEFUL_TIMEOUT", "30")),
    )

    del app  # the server holds it (server.current): a reload can let it go

    @server.on_startup
    def started() -> None:  # bound, the workers not yet forked
        if lockserve:
            variants = served(server.current.app)
            write_state(state_path(pidfile), "started", os.getpid(), variants=variants)
        notify_ready()

    @server.on_shutdown
    def cleaned() -> None:
        if store is not None:
            shutil.rmtree(store.root, ignore_errors=True)
        remove_own_metrics()

    frozen()
    server.serve(target_loader=server.loader, wrap_loader=True)


if __name__ == "__main__":
    main()
