"""A local stand-in for the AWS Lambda Runtime API, for running a real runtime client.

Implements what a runtime client calls (2018-06-01): the next invocation (held until one is
queued), its response or error, and an init error. ``invoke`` queues an event and waits for
the answer. Binds 127.0.0.1 on a free port; stopped by the test that started it.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PREFIX = "/2018-06-01/runtime"
# What Lambda's own runtime brings beside a zip: the runtime interface client and its needs
RUNTIME_CLIENT = ("awslambdaric", "simplejson", "snapshot_restore_py", "runtime_client")


def runtime_client(folder: Path) -> Path:
    """A folder holding only the runtime interface client (links into this environment's),
    for the path after a zip's own, as /var/runtime is on Lambda."""
    import awslambdaric

    site = Path(awslambdaric.__file__).resolve().parents[1]
    folder.mkdir(parents=True, exist_ok=True)
    for entry in site.iterdir():
        if entry.name.startswith(RUNTIME_CLIENT) and not (folder / entry.name).exists():
            (folder / entry.name).symlink_to(entry)
    return folder


def http_api_v2_event(method: str, path: str, body: Any | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda hands it over."""
    now = int(time.time() * 1000)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "lockserve-tests",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "lockserve-tests",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": now,
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


class FakeRuntimeApi:
    """The Runtime API on 127.0.0.1: queue events, collect responses and errors."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, dict]] = queue.Queue()
        self.answers: dict[str, tuple[str, Any]] = {}
        self.init_error: Any = None
        self.next_calls = 0
        self._done = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeRuntimeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, event: dict, timeout: float = 60) -> tuple[str, Any]:
        """Queue ``event``; return ("response" | "error", payload) once the client answers."""
        request_id = uuid.uuid4().hex
        self.events.put((request_id, event))
        deadline = time.monotonic() + timeout
        with self._done:
            while request_id not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.init_error is not None:
                    raise AssertionError(
                        f"no answer in {timeout} s (init error: {self.init_error})"
                    )
                self._done.wait(min(left, 0.5))
            return self.answers.pop(request_id)

    def _record(self, request_id: str | None, kind: str, payload: Any) -> None:
        with self._done:
            if request_id is None:
                self.init_error = payload
            else:
                self.answers[request_id] = (kind, payload)
            self._done.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reply(self, status: int, body: bytes = b"{}", headers: dict | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._reply(404)
                    return
                api.next_calls += 1
                request_id, event = api.events.get()  # a real Runtime API also holds the call
                deadline = int(time.time() * 1000) + 30_000
                self._reply(
                    200,
                    json.dumps(event).encode(),
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline),
                        "Lambda-Runtime-Invoked-Function-Arn": (
                            "arn:aws:lambda:eu-west-1:123456789012:function:lockserve"
                        ),
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                payload = json.loads(raw) if raw else None
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api._record(None, "error", payload)
                elif (
                    len(parts) == 3
                    and parts[0] == "invocation"
                    and parts[2]
                    in (
                        "response",
                        "error",
                    )
                ):
                    api._record(parts[1], parts[2], payload)
                else:
                    self._reply(404)
                    return
                self._reply(202)

        return Handler


def lambda_env(api: FakeRuntimeApi, task: Path) -> dict[str, str]:
    """What Lambda's python runtime sets, and nothing of this machine's Python set-up: the zip
    first on the path, then only the runtime interface client (Lambda's /var/runtime)."""
    runtime = runtime_client(task.parent / f"{task.name}-runtime")
    return {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "LAMBDA_TASK_ROOT": str(task),
        "PYTHONPATH": f"{task}:{runtime}",
        "_HANDLER": "api.lambda_handler.handler",
        "AWS_LAMBDA_FUNCTION_NAME": "lockserve",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "TZ": ":UTC",
    }


def start_runtime(api: FakeRuntimeApi, task: Path, log: Path | None) -> subprocess.Popen:
    """awslambdaric running the handler of the unpacked zip ``task`` against ``api``, on the
    bare interpreter (-S: no site-packages, so everything imported comes from the zip)."""
    return subprocess.Popen(
        [sys._base_executable, "-S", "-m", "awslambdaric", "api.lambda_handler.handler"],
        cwd=task,
        env=lambda_env(api, task),
        stdout=open(log, "wb") if log else subprocess.DEVNULL,  # noqa: SIM115 - the child's
        stderr=subprocess.STDOUT,
    )
