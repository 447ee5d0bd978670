"""gunicorn + uvicorn, the server `make bench` sets beside the production one (api/serve.py,
granian) to re-check the choice: `gunicorn -c api/gunicorn_conf.py api.main:app`.

gunicorn settings and hooks: uvicorn workers, bind from HOST/PORT, workers from
WEB_CONCURRENCY; the preflight check before any worker starts (on_starting), the served state
for `make reload` (when_ready, on_reload), stop signals kept across a worker's fork
(post_fork), its readiness log (post_worker_init), what it still holds written as it exits
(worker_exit) and its metrics' cleanup (child_exit); what the master loaded frozen out of the
garbage collector's way before workers are forked (when_ready, on_reload).

The app is loaded in the master before it binds (preload), so a model that fails to resolve
stops the server before it listens, and workers share the loaded model's memory.
"""

import gc
import logging
import os
import queue
import signal
import sys
import tempfile

from api.serve import GC_GEN0, frozen, rebuild, worker_ready  # the same for both servers

# Prometheus multiprocess mode: set before the app (and prometheus-client) is imported.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lockserve-metrics-")
    os.environ["LOCKSERVE_OWN_METRICS_DIR"] = "1"  # ours to remove on exit

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))
worker_class = "api.worker.Worker"
preload_app = True
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
timeout = 60
keepalive = 5
pidfile = os.environ.get("LOCKSERVE_PIDFILE", ".lockserve/gunicorn.pid")  # for make reload
os.makedirs(os.path.dirname(pidfile) or ".", exist_ok=True)
accesslog = None  # the app logs one JSON line per request
control_socket_disable = True  # several servers may run side by side (tests, bench)


def on_starting(server: object) -> None:
    """Refuse to start when an adapter's preflight check finds a problem (the gRPC port is
    taken), before any worker starts."""
    from api.protocols import preflight
    from api.settings import Settings

    problem = preflight(Settings())
    if problem is not None:
        logging.getLogger("lockserve").critical("refusing to start: %s", problem)
        sys.exit(3)


def when_ready(server: object) -> None:
    """Record what the master serves (beside the pidfile) for `make reload` to compare with;
    freeze what it loaded before the workers are forked."""
    from api.reload import served, state_path, write_state

    app = server.app.callable  # type: ignore[attr-defined]
    if hasattr(app, "state"):  # lockserve's app (the benchmarks' HTTP floor is a bare one)
        write_state(state_path(pidfile), "started", os.getpid(), variants=served(app))
    frozen()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def post_fork(server: object, worker: object) -> None:
    """Keep a stop signal that reaches a worker before its own handlers are set.

    A forked worker starts with the master's signal handler, which only queues a signal in
    the master's queue (the worker's copy of it). A SIGTERM sent in that moment (the master
    stopping just after it spawned a worker, or a whole process group stopped during a
    reload) would be lost, and the worker would serve on until the graceful timeout kills it.
    So the worker takes the default action for stop signals from here on, and one already
    queued (received, or pending in the master when it forked) ends it before it serves.
    """
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])  # fewer collections of young objects
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    pending = server.SIG_QUEUE  # type: ignore[attr-defined] - the worker's copy: ours to drain
    while True:
        try:
            sig = pending.get_nowait()
        except queue.Empty:
            return
        if sig in STOP_SIGNALS:
            os.kill(os.getpid(), sig)


def post_worker_init(worker: object) -> None:
    """Log how long it took from start to a worker ready to serve (includes model load)."""
    worker_ready()


def worker_exit(server: object, worker: object) -> None:
    """In the worker, as it exits: write the request counts and access lines it still holds,
    had its app's lifespan not done so (it writes them when it stops)."""
    middleware = sys.modules.get("api.middleware")  # only if this process served lockserve
    if middleware is not None:
        middleware.flush()


def child_exit(server: object, worker: object) -> None:
    """A dead worker's live-only samples leave the Prometheus totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_reload(server: object) -> None:
    """SIGHUP: rebuild the app from serving.yaml (every variant re-resolved and verified) for
    the new workers; the old ones finish their requests. A bad file keeps the old app."""
    from api.reload import served, state_path, write_state

    where = state_path(pidfile)
    try:
        app = rebuild()
    except Exception as exc:  # noqa: BLE001 - a reload must never take the service down
        write_state(where, "refused", os.getpid(), reason=str(exc))
        frozen()
        return
    server.app.callable = app  # type: ignore[attr-defined]
    write_state(where, "reloaded", os.getpid(), variants=served(app))
    frozen()


def on_exit(server: object) -> None:
    """Remove the metrics directory this server made for itself."""
    import shutil

    if os.environ.pop("LOCKSERVE_OWN_METRICS_DIR", None):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
