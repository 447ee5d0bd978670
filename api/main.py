"""The app the servers load: `python -m api.serve` (production), or
`gunicorn -c api/gunicorn_conf.py api.main:app` (or uvicorn).

Resolution happens at import, before the server listens: a model that cannot be resolved and
verified ends the process with exit code 3 and one log line saying what was wrong.
"""

import logging
import sys

from fastapi import FastAPI
from pydantic import ValidationError

from api import logs
from api.app import create_app
from api.resolver import ResolutionError
from api.serving import ServingError
from api.settings import Settings, describe
from api.store import log_ready


def build() -> FastAPI:
    """Settings from the environment, JSON logs, the app with every variant verified and loaded.

    Raises ResolutionError or ServingError when that cannot be done, ValidationError for a
    setting out of range.
    """
    settings = Settings()
    logs.configure(settings.log_level)
    app = create_app(settings)
    log_ready(app.state.store)
    return app


try:
    app = build()
except (ResolutionError, ServingError) as exc:
    logging.getLogger("lockserve").critical("refusing to start: %s", exc)
    sys.exit(3)
except ValidationError as exc:  # before the settings could configure logging
    logs.configure()
    logging.getLogger("lockserve").critical("refusing to start: %s", describe(exc))
    sys.exit(3)
