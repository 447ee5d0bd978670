"""AWS Lambda entry point: Mangum around the same app, serving the bundle packaged beside it.

``api.lambda_handler.handler`` is what a Lambda function names. At cold start (import) the
bundled model is read and its md5 verified (LOCKSERVE_BUNDLE, by default ``bundle/`` beside
``api/``); a model that does not verify fails the init with one log line, so the function never
answers with other bytes. The app's lifespan runs once here, not once per invocation; gRPC is
off (API Gateway speaks HTTP), and state goes to /tmp, the one writable place.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from mangum import Mangum

from api import logs
from api.app import create_app
from api.resolver import ResolutionError
from api.serving import ServingError
from api.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {
    "LOCKSERVE_BUNDLE": str(ROOT / "bundle"),
    "LOCKSERVE_GRPC_PORT": "0",
    "LOCKSERVE_STATE_DB": "/tmp/lockserve/state.sqlite",
    "LOCKSERVE_SERVING_FILE": str(ROOT / "serving.yaml"),
}


def _build() -> Mangum:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    settings = Settings()
    logs.configure(settings.log_level)
    logging.getLogger("mangum").setLevel(logging.WARNING)  # its line per request repeats ours
    app = create_app(settings)
    served = app.state.store.get(app.state.store.variants()[0])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Mangum runs every invocation on this loop
    loop.run_until_complete(app.router.lifespan_context(app).__aenter__())
    logging.getLogger("lockserve").info(
        "model %s ready from bundle (verify %.0f ms, load %.0f ms)",
        served.md5,
        served.resolved.timings_ms.get("verify_ms", 0.0),
        served.load_ms,
        extra={logs.FIELDS: {"md5": served.md5, "rev": served.resolved.rev}},
    )
    return Mangum(app, lifespan="off")


try:
    handler = _build()
except (ResolutionError, ServingError) as exc:
    logging.getLogger("lockserve").critical("refusing to start: %s", exc)
    # Lambda reports an exception raised at import as the function's init error, by message
    raise RuntimeError(f"refusing to start: {exc}") from None
