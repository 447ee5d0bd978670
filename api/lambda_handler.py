"""AWS Lambda entry point: Mangum around the same app, serving the bundle packaged beside it.

``api.lambda_handler.handler`` is what a Lambda function names. At cold start (import) the
bundled model is read and its md5 verified (LOCKSERVE_BUNDLE, by default ``bundle/`` beside
``api/``; against LOCKSERVE_BUNDLE_MD5 too when the function's configuration sets it); a model
that does not verify fails the init with one log line, so the function never answers with
other bytes. The app's lifespan runs once here, not once per invocation; gRPC is
off (API Gateway speaks HTTP), and state goes to /tmp, the one writable place.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mangum import Mangum
from pydantic import ValidationError

from api import logs
from api.app import create_app
from api.resolver import ResolutionError
from api.serving import ServingError
from api.settings import Settings, describe
from api.store import log_ready

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    "LOCKSERVE_BUNDLE": str(ROOT / "bundle"),
    "LOCKSERVE_GRPC_PORT": "0",
    "LOCKSERVE_STATE_DB": "/tmp/lockserve/state.sqlite",
    "LOCKSERVE_SERVING_FILE": str(ROOT / "serving.yaml"),
    "XDG_CACHE_HOME": "/tmp/lockserve/cache",  # onnxruntime keeps an id there, else warns
}


def _build() -> Mangum:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    settings = Settings()
    logs.configure(settings.log_level)
    logging.getLogger("mangum").setLevel(logging.WARNING)  # its line per request repeats ours
    app = create_app(settings)
    log_ready(app.state.store)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Mangum runs every invocation on this loop
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    app.state.lifespan = lifespan  # for whoever ends this process cleanly (tests)
    return Mangum(app, lifespan="off")


try:
    handler = _build()
except (ResolutionError, ServingError, ValidationError) as exc:
    problem = describe(exc) if isinstance(exc, ValidationError) else str(exc)
    logs.configure()
    logging.getLogger("lockserve").critical("refusing to start: %s", problem)
    # Lambda reports an exception raised at import as the function's init error, by message
    raise RuntimeError(f"refusing to start: {problem}") from None
