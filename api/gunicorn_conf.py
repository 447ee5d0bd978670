"""gunicorn settings: uvicorn workers, bind from HOST/PORT, workers from WEB_CONCURRENCY.

The app is loaded in the master before it binds (preload), so a model that fails to resolve
stops the server before it listens, and workers share the loaded model's memory.
"""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))
worker_class = "uvicorn_worker.UvicornWorker"
preload_app = True
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
timeout = 60
keepalive = 5
accesslog = None  # the app logs one JSON line per request
control_socket_disable = True  # several servers may run side by side (tests, bench)
