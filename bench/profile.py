"""Where a single-row POST /predict spends its time in a real server under load.

The default server (python -m api.serve: granian workers, ONNX) is hit by ab at -c 100 while
py-spy samples every worker. Each sample's Python stack is put in one part of the request path (the
first rule in PARTS that one of its frames matches, innermost frame first), and a part's share
of the samples times the workers' measured CPU time per request gives its µs per request.
Native code is charged to the Python frame that called it (onnxruntime's run to the runtime,
uvloop's socket work to the server); granian's Rust threads (HTTP parsing, socket I/O) hold
no Python frame and are not sampled, so their share is in the CPU per request only.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import json_handler_only

BIN = Path(sys.executable).parent

# part -> substrings of a frame ("function (file:line)") that put a sample in it; from the
# innermost frame out, the first frame that matches a part's substring puts the sample there
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("access log (logging, JSON line)", ("logging/__init__.py", "api/logs.py")),
    ("metrics (prometheus-client)", ("prometheus_client/", "api/metrics.py")),
    ("validation (pydantic-core, missing values)", ("pydantic", "Core.rows", "sparse_rows")),
    ("features (preprocess.json, numpy)", ("contract/features.py",)),
    ("runtime (onnxruntime)", ("onnxruntime",)),
    ("answer rule and JSON encoding", ("contract/labels.py", "decide", "predictions", "orjson")),
    (
        "server's Python side (granian's ASGI glue, uvloop, asyncio)",
        ("uvicorn", "gunicorn/", "httptools", "uvloop", "asyncio/", "socket.py", "granian"),
    ),
    ("service plumbing (request context, fast path, strategy, runner)", ("api/",)),
    ("other", ("",)),
]


def part_of(frames: list[str]) -> str:
    """The part of the request path one sample (its frames, outermost first) belongs to."""
    for frame in reversed(frames):
        for part, needles in PARTS[:-1]:
            if any(needle in frame for needle in needles):
                return part
    return PARTS[-1][0]


WAITING = ("Condition.wait (threading.py", "Event.wait (threading.py")


def samples(raw: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) samples, ``frame;frame;... count`` a line, as (frames,
    count), without those of threads that only wait (py-spy takes a timed wait for work)."""
    out = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and count.isdigit() and not frames[-1].startswith(WAITING):
            out.append((frames, int(count)))
    return out


def shares(raw: str) -> dict[str, float]:
    """Each part's share of py-spy's raw samples."""
    counts: collections.Counter[str] = collections.Counter()
    for frames, count in samples(raw):
        counts[part_of(frames)] += count
    total = sum(counts.values()) or 1
    return {part: counts[part] / total for part, _ in PARTS}


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def cpu_per_request(master: int, url: str, body: Path, requests: int) -> dict[str, float]:
    """req/s and the workers' CPU µs per request over ``requests`` single-row requests."""
    workers = [child.pid for child in psutil.Process(master).children()]
    before = cpu_s(workers)
    started = time.perf_counter()
    subprocess.run(
        [
            "ab",
            "-q",
            "-n",
            str(requests),
            "-c",
            "100",
            "-s",
            "30",
            "-p",
            str(body),
            "-T",
            "application/json",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    wall = time.perf_counter() - started
    return {
        "req_per_s": round(requests / wall),
        "server_cpu_us_per_request": round((cpu_s(workers) - before) / requests * 1e6, 1),
    }


def profile(
    master: int, url: str, body: Path, requests: int, seconds: float, rate: int = 200
) -> dict[str, Any]:
    """Sample every worker of the server ``master`` while ab sends ``requests`` single-row
    requests at -c 100; the table of parts in µs per request, and the CPU figures behind it."""
    workers = [child.pid for child in psutil.Process(master).children()]
    ab = ["ab", "-q", "-n", str(requests), "-c", "100", "-s", "30"]
    load = subprocess.Popen(
        [*ab, "-p", str(body), "-T", "application/json", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(0.5)  # past connection set-up
    with tempfile.TemporaryDirectory() as tmp:
        spies, outs = [], []
        for pid in workers:
            out = Path(tmp) / f"{pid}.txt"
            spy = [str(BIN / "py-spy"), "record", "-r", str(rate), "-d", str(seconds)]
            spies.append(
                subprocess.Popen(
                    [*spy, "-p", str(pid), "-f", "raw", "-o", str(out)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            outs.append(out)
        for spy in spies:
            spy.wait(timeout=seconds + 60)
        raw = "\n".join(out.read_text() for out in outs if out.exists())
    if not samples(raw):
        load.kill()
        raise RuntimeError(
            f"py-spy took no samples of workers {workers} (exit codes "
            f"{[spy.returncode for spy in spies]}): it needs ptrace (root, or "
            "kernel.yama.ptrace_scope=0)"
        )
    stdout, _ = load.communicate(timeout=900)
    # CPU per request from a second, unsampled run: py-spy's own reads slow the workers
    cost = cpu_per_request(master, url, body, requests)
    per_request_us = cost["server_cpu_us_per_request"]
    parts = shares(raw)
    unplaced: collections.Counter[str] = collections.Counter()
    for frames, count in samples(raw):
        if part_of(frames) == "other":
            unplaced[frames[-1]] += count
    return {
        "requests": requests,
        **cost,
        "samples": sum(count for _, count in samples(raw)),
        "other_frames": [frame for frame, _ in unplaced.most_common(5)],
        "parts": {
            part: {"share": round(share, 4), "us_per_request": round(share * per_request_us, 1)}
            for part, share in parts.items()
        },
    }


def table(result: dict[str, Any], floor_us: float | None = None) -> str:
    """The profile as markdown: a part a line, µs per request and share."""
    lines = ["| part of the request path | µs/request | share |", "|---|---|---|"]
    for part, figures in result["parts"].items():
        lines.append(
            f"| {part} | {figures['us_per_request']:.1f} | {100 * figures['share']:.0f}% |"
        )
    lines.append(
        f"| **all, server CPU per request** | {result['server_cpu_us_per_request']:.1f} | |"
    )
    if floor_us is not None:
        lines.append(
            f"| the HTTP floor's server CPU per request (same server) | {floor_us:.1f} | |"
        )
    return "\n".join(lines)


class Post:
    """POST /predict of ``body`` through the ASGI app, without a socket, on a loop of its own:
    each call is one request; ``sent`` holds the last one's ASGI messages."""

    def __init__(self, app: Any, body: bytes) -> None:
        self.app, self.body = app, body
        self.sent: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.scope = {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }

    async def _receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def __call__(self) -> None:
        self.sent.clear()
        self.loop.run_until_complete(self.app(dict(self.scope), self._receive, self._send))

    def close(self) -> None:
        self.loop.close()


def in_process_parts(app: Any, body: bytes, repeats: int = 5) -> dict[str, float]:
    """µs per request of each step of POST /predict for ``body``, in process on one thread
    (the best of ``repeats``), and of the whole request through the ASGI app."""
    import orjson

    from api.backends import decide, predictions

    core = app.state.core
    backend = core.store.get(core.strategy.primary).backend
    rows = core.rows(body)
    matrix = backend._features.rows(rows)  # noqa: SLF001 - the steps of OnnxBackend.predict
    output = backend._run(matrix)  # noqa: SLF001
    answered = decide(backend.task, backend.classes, output)
    answer = predictions(backend.task, backend.classes, output, answered)
    post = Post(app, body)
    steps = {
        "validation": lambda: core.rows(body),
        "features": lambda: backend._features.rows(rows),  # noqa: SLF001
        "graph": lambda: backend._run(matrix),  # noqa: SLF001
        "answer rule": lambda: decide(backend.task, backend.classes, output),
        "answer objects": lambda: predictions(backend.task, backend.classes, output, answered),
        "JSON encoding": lambda: orjson.dumps({"predictions": answer}),
        "whole request (ASGI, no socket)": post,
    }
    out = {}
    with json_handler_only():  # as in a server: the access log's own path
        for name, step in steps.items():
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - started)
            out[name] = round(best * 1e6, 1)
    post.close()
    return out
