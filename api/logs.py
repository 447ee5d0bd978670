"""Structured logging: one JSON object a line on stderr, through the standard logging module."""

import logging
import sys
import time
from typing import Any

import orjson

FIELDS = "fields"  # log.info("msg", extra={FIELDS: {...}}) adds keys to the JSON line


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line: time, level, logger, message and any extra fields."""

    _second: int = -1
    _stamp: str = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str = "INFO") -> None:
    """Send every logger (ours, uvicorn's, gunicorn's, DVC's) through one JSON handler on
    stderr.

    Caller, thread and process lookups are switched off: the lines do not use them, and they
    cost more than the rest of a request's logging.
    """
    logging._srcfile = None  # documented switch: skip findCaller()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    try:
        import dvc  # noqa: F401 - DVC gives its loggers plain-text handlers when imported
    except ImportError:  # a packaged artifact serves its baked model without DVC
        pass

    for name in ("uvicorn", "uvicorn.error", "gunicorn.error", "dvc", "dvc_objects", "dvc_data"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)  # the level is the root's, as asked
    for name in ("uvicorn.access", "gunicorn.access"):  # replaced by our access log
        logging.getLogger(name).disabled = True
