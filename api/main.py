"""Server entry point: `gunicorn -c api/gunicorn_conf.py api.main:app` (or uvicorn).

Resolution happens at import, before the server listens: a model that cannot be resolved and
verified ends the process with exit code 3 and one log line saying what was wrong.
"""

import logging
import sys

from api import logs
from api.app import create_app
from api.resolver import ResolutionError
from api.settings import Settings

settings = Settings()
logs.configure(settings.log_level)
try:
    app = create_app(settings)
except ResolutionError as exc:
    logging.getLogger("lockserve").critical("refusing to start: %s", exc)
    sys.exit(3)
