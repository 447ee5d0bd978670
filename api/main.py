"""Server entry point: `gunicorn -c api/gunicorn_conf.py api.main:app` (or uvicorn).

Resolution happens at import, before the server listens: a model that cannot be resolved and
verified ends the process with exit code 3 and one log line saying what was wrong.
"""

import logging
import sys

from fastapi import FastAPI

from api import logs
from api.app import create_app
from api.logs import FIELDS
from api.resolver import ResolutionError
from api.serving import ServingError
from api.settings import Settings


def build() -> FastAPI:
    """Settings from the environment, JSON logs, the app with every variant verified and loaded.

    Raises ResolutionError or ServingError when that cannot be done.
    """
    settings = Settings()
    logs.configure(settings.log_level)
    app = create_app(settings)
    for variant in app.state.store.variants():
        served = app.state.store.get(variant)
        steps = {**served.resolved.timings_ms, "load_ms": served.load_ms}
        logging.getLogger("lockserve").info(
            "model %s ready from %s: %s",
            served.md5,
            served.resolved.source,
            ", ".join(f"{k[:-3]} {v:.0f} ms" for k, v in steps.items()),
            extra={
                FIELDS: {
                    "variant": variant,
                    "md5": served.md5,
                    "source": served.resolved.source,
                    **{k: round(v, 1) for k, v in steps.items()},
                }
            },
        )
    return app


try:
    app = build()
except (ResolutionError, ServingError) as exc:
    logging.getLogger("lockserve").critical("refusing to start: %s", exc)
    sys.exit(3)
