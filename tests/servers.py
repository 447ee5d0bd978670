"""Real server processes for system tests: free ports, readiness, clean stops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import venv_env

# the production server, as `make serve` and the Procfile start it
SERVER = [sys.executable, "-m", "api.serve"]
# gunicorn + uvicorn workers, the measured alternative (`make bench`)
GUNICORN = [
    str(Path(sys.executable).parent / "gunicorn"),
    "-c",
    "api/gunicorn_conf.py",
    "api.main:app",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


SINGLE = "strategy: single\nvariants:\n  default: {rev: workspace}\n"


def isolated_env(log: Path, port: int, **env: str) -> dict[str, str]:
    """The server's environment: none of the caller's LOCKSERVE_* settings, and a serving file,
    pid file and bandit state of its own beside its log, unless ``env`` names others."""
    base = {
        k: v
        for k, v in venv_env().items()
        if not k.startswith("LOCKSERVE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    serving = log.with_suffix(".serving.yaml")
    if "LOCKSERVE_SERVING_FILE" not in env:
        serving.write_text(SINGLE)
    own = {
        "LOCKSERVE_GRPC_PORT": "0",  # a test that wants gRPC gives it a free port
        "LOCKSERVE_SERVING_FILE": str(serving),
        "LOCKSERVE_PIDFILE": str(log.with_suffix(".pid")),
        "LOCKSERVE_STATE_DB": str(log.with_suffix(".state.sqlite")),
    }
    return {**base, **own, "PORT": str(port), **env}


class Server:
    """A server process in its own session; stdout and stderr go to a log file."""

    def __init__(self, cmd: list[str], cwd: Path, port: int, log: Path, **env: str) -> None:
        self.port, self.log = port, log
        self.base = f"http://127.0.0.1:{port}"
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=isolated_env(log, port, **env),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                if http("GET", self.base + "/health/ready", timeout=2)[0] == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.output()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(cmd: list[str], cwd: Path, log: Path, **env: str) -> Iterator[Server]:
    """Start a server on a free loopback port, wait until ready, always stop it."""
    server = Server(cmd, cwd, free_port(), log, **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def json_lines(text: str) -> list[dict]:
    """The JSON log lines in a server's output (anything else is skipped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def refused(cmd: list[str], cwd: Path, log: Path, **env: str) -> tuple[str, str]:
    """Start a server that must refuse to start: exit 3, never listening, one CRITICAL line.

    Return that line's message and the whole output."""
    server = Server(cmd, cwd, free_port(), log, **env)
    code = server.proc.wait(120)
    output = server.output()
    server.stop()
    assert code == 3, output
    assert "Listening at" not in output
    fatal = [line for line in json_lines(output) if line["level"] == "CRITICAL"]
    assert len(fatal) == 1, output
    return fatal[0]["msg"], output


def columns(rows: list[dict]) -> dict[str, list]:
    """A table's rows as one list per column, as the Open Inference Protocol sends it."""
    return {name: [row[name] for row in rows] for name in rows[0]}


def raw_bytes(values: list) -> bytes:
    """A column as raw tensor bytes: BYTES length-prefixed, numbers FP32 (None as NaN)."""
    import struct

    import numpy as np

    if any(isinstance(v, str) for v in values):
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return np.array([np.nan if v is None else v for v in values], "<f4").tobytes()


def infer_request(model: str, rows: list[dict], raw: bool = False) -> Any:
    """A gRPC ModelInferRequest for ``rows``, one tensor per column: typed contents (BYTES,
    FP64, None as NaN) or raw contents (BYTES, FP32)."""
    import math

    from api.proto import open_inference_grpc_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, values in columns(rows).items():
        text = any(isinstance(v, str) for v in values)
        datatype = "BYTES" if text else "FP32" if raw else "FP64"
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if raw:
            request.raw_input_contents.append(raw_bytes(values))
        elif text:
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            tensor.contents.fp64_contents.extend(math.nan if v is None else v for v in values)
    return request


def grpc_model_infer(address: str, model: str, instance: dict) -> tuple[bool, str, str]:
    """(ServerLive, model md5, label) from the server's gRPC port, with lockserve's own stubs."""
    import grpc

    from api.proto import open_inference_grpc_pb2 as pb
    from api.proto import open_inference_grpc_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        live = stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        response = stub.ModelInfer(infer_request(model, [instance]), timeout=10)
    label = response.raw_output_contents[0][4:].decode()  # one BYTES element
    return live, response.model_version, label
