"""Structured logging: one JSON object a line on stderr, through the standard logging module;
and the access log's hot path (:class:`AccessLog`), which writes the same lines to the same
handler a loop turn at a time."""

import asyncio
import logging
import select
import sys
import time
from typing import Any

import orjson

FIELDS = "fields"  # log.info("msg", extra={FIELDS: {...}}) adds keys to the JSON line
HANDLER: logging.StreamHandler | None = None  # the JSON handler configure() put on the root logger


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
    global HANDLER
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    HANDLER = handler
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


class AccessLog:
    """One INFO line a request on ``logger``, at a fraction of a log record's cost.

    While the line's only way out is the JSON handler :func:`configure` set up (no other
    handler or filter on the way, the logger enabled for INFO), the line is formatted here as
    that handler would format it and kept; the loop writes what a turn kept in one call, right
    after the turn, under the handler's lock. Anything else (another handler, a filter, a caller
    with no running loop) gets an ordinary log record, so what is configured always decides.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._lines: list[str] = []
        self._clock = JsonFormatter()

    def _direct(self) -> logging.StreamHandler | None:
        """The JSON handler, when it is the only handler and nothing filters on the way."""
        handler = HANDLER
        if handler is None or handler.filters:
            return None
        node: Any = self.logger
        while node.parent is not None:  # up to the root: no handler, no filter, propagating
            if node.handlers or node.filters or not node.propagate:
                return None
            node = node.parent
        return handler if node.handlers == [handler] and not node.filters else None

    def info(self, message: str, fields: dict[str, Any]) -> None:
        """Log ``message`` with ``fields`` at INFO."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct()
        try:
            loop = asyncio.get_running_loop() if handler is not None else None
        except RuntimeError:
            loop = None
        if loop is None:
            logger.info("%s", message, extra={FIELDS: fields})
            return
        line = {
            "ts": self._clock._time(time.time()),
            "level": "INFO",
            "logger": logger.name,
            "msg": message,
        }
        line.update(fields)
        try:
            text = orjson.dumps(line, default=str).decode()
        except (TypeError, ValueError):  # as a record's formatting failure: never the request's
            logger.info("%s", message, extra={FIELDS: fields})
            return
        self._lines.append(text)
        if len(self._lines) == 1:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the lines kept so far, whole lines of at most PIPE_BUF bytes a write: the
        workers share one stderr, and a pipe keeps a write that small in one piece."""
        lines, self._lines = self._lines, []
        handler = HANDLER
        if not lines or handler is None:
            return
        chunks, chunk, size = [], [], 0
        for text in lines:
            length = len(text.encode()) + 1
            if chunk and size + length > select.PIPE_BUF:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(text)
            size += length
        chunks.append(chunk)
        with handler.lock:  # type: ignore[union-attr] - created with the handler
            for part in chunks:
                try:
                    handler.stream.write("\n".join(part) + "\n")
                    handler.flush()
                except Exception:  # noqa: BLE001 - as Handler.emit: report, never raise
                    handler.handleError(logging.makeLogRecord({"msg": part[0]}))
