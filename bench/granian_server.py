"""granian in place of gunicorn + uvicorn, for `make bench` to set the two servers side by side.

`python -m bench.granian_server module:app` imports the app first, so lockserve's app
resolves and verifies its models (exit 3 on failure) before granian binds, as under gunicorn;
granian's workers, forked after that, serve the loaded app (weights shared copy-on-write). Bind
from HOST and PORT, WEB_CONCURRENCY workers, PROMETHEUS_MULTIPROC_DIR made if unset. The
service itself runs under gunicorn (`make serve`): this is the measured alternative.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import tempfile


def main() -> None:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # before the app imports prometheus-client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lockserve-metrics-")
    module, _, name = sys.argv[1].partition(":")
    app = getattr(importlib.import_module(module), name)  # lockserve's exits 3 here if refused
    gc.collect()
    gc.freeze()  # what was loaded stays out of the workers' collections (measured: +5-10% req/s)

    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.server import Server

    server = Server(
        sys.argv[1],
        address=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        interface=Interfaces.ASGI,
        workers=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)),
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_enabled=False,  # the app writes its own JSON lines
    )
    server.serve(target_loader=lambda _target: app)


if __name__ == "__main__":
    main()
