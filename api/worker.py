"""The gunicorn worker class: uvicorn on uvloop and httptools, without uvicorn's access log
(the app writes its own JSON access line)."""

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}
