"""Benchmarks in one run, on the artifact dvc.lock pins: `make bench` (python -m bench.run).

Servers on free loopback ports, each warmed up, then hit by Apache Bench at -c 100 with
single-row requests (HTTP/1.0, as the lecture's `ab -c 100 -n 1000`):
  the lecture's Flask + `gunicorn -w 4` baseline; lockserve with the sklearn backend, batching
  off and on; lockserve as configured by default (ONNX); the HTTP floor (a hello-world app
  under the same server and workers). Then 1000-instance requests (rows/s), in-process
  predict cost (pytest-benchmark), RSS per worker and in all, and start-to-ready time.
Results: bench/results/bench.json, bench/results/bench.md and the README table. Then gRPC
next to REST on one server (bench/protocols.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import fill_readme, protocols
from tests.conftest import PENGUIN
from tests.servers import Server, free_port, running

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
GUNICORN = f"{BIN}/gunicorn -c api/gunicorn_conf.py"
BASELINE = "flask + gunicorn -w 4 (lecture baseline, sklearn)"
DEFAULT = "lockserve default (onnx)"
FLOOR = "HTTP floor (hello-world, same server and workers)"
# name -> (shell command binding 127.0.0.1:$PORT, extra environment, requests)
SERVERS: dict[str, tuple[str, dict[str, str], int]] = {
    BASELINE: (
        f"{BIN}/gunicorn -w 4 -b 127.0.0.1:$PORT --access-logfile - bench.flask_baseline:app",
        {},
        2000,
    ),
    "lockserve sklearn, batching off": (
        f"{GUNICORN} api.main:app",
        {"LOCKSERVE_BACKEND": "sklearn", "LOCKSERVE_RUNNER": "thread"},
        2000,
    ),
    "lockserve sklearn, batching on": (
        f"{GUNICORN} api.main:app",
        {"LOCKSERVE_BACKEND": "sklearn", "LOCKSERVE_RUNNER": "batch"},
        10000,
    ),
    DEFAULT: (f"{GUNICORN} api.main:app", {}, 20000),
    "lockserve canary 50/50, two variants (onnx)": (
        f"{GUNICORN} api.main:app",
        {"LOCKSERVE_SERVING_FILE": "{tmp}/canary.yaml"},
        20000,
    ),
    "lockserve bandit, two variants (onnx)": (
        f"{GUNICORN} api.main:app",
        {"LOCKSERVE_SERVING_FILE": "{tmp}/bandit.yaml", "LOCKSERVE_STATE_DB": "{tmp}/state.sqlite"},
        20000,
    ),
    FLOOR: (f"{GUNICORN} bench.floor:app", {}, 20000),
}
# Two variants of the pinned model, loaded side by side (both at HEAD: routing and memory
# cost, whatever the models).
SERVING = {
    "canary.yaml": "strategy: canary\nvariants:\n  a: {rev: HEAD, weight: 50}\n"
    "  b: {rev: HEAD, weight: 50}\n",
    "bandit.yaml": "strategy: bandit\nvariants:\n  a: {rev: HEAD}\n  b: {rev: HEAD}\n",
}


def ab(url: str, body: Path | None, requests: int, concurrency: int) -> dict[str, float]:
    """Run ab against ``url`` (POST ``body`` as JSON, or GET when None); return req/s, p50/p99
    latency (ms) and failed requests."""
    cmd = [
        "ab",
        "-q",
        "-n",
        str(requests),
        "-c",
        str(concurrency),
        "-s",
        "30",
        *(["-p", str(body), "-T", "application/json"] if body is not None else []),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout

    def number(pattern: str, default: float | None = None) -> float:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            if default is None:
                raise RuntimeError(f"ab output lacks {pattern!r}:\n{out}")
            return default
        return float(match.group(1))

    return {
        "requests": requests,
        "concurrency": concurrency,
        "req_per_s": number(r"^Requests per second:\s+([\d.]+)"),
        "p50_ms": number(r"^\s+50%\s+(\d+)"),
        "p99_ms": number(r"^\s+99%\s+(\d+)"),
        "failed": number(r"^Failed requests:\s+(\d+)") + number(r"^Non-2xx responses:\s+(\d+)", 0),
    }


def rss_mb(pid: int) -> dict[str, float]:
    """RSS of a server's master and each worker, and their sum, in MB."""
    master = psutil.Process(pid)
    workers = master.children(recursive=True)
    per_worker = [w.memory_info().rss / 1e6 for w in workers]
    return {
        "master_mb": round(master.memory_info().rss / 1e6, 1),
        "worker_mb": round(max(per_worker), 1) if per_worker else 0.0,
        "total_mb": round((master.memory_info().rss / 1e6) + sum(per_worker), 1),
    }


def start_to_ready(tmp: Path, repeats: int = 3) -> float:
    """Median seconds from starting the default server to /health/ready (artifact local)."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        server = Server(
            ["sh", "-c", f"exec {GUNICORN} api.main:app"], ROOT, free_port(), tmp / f"ready{i}.log"
        )
        try:
            server.wait_ready()
            times.append(time.perf_counter() - started)
        finally:
            server.stop()
    return round(sorted(times)[len(times) // 2], 2)


def in_process() -> dict[str, float]:
    """µs per row from bench/test_inprocess.py (pytest-benchmark medians)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "inprocess.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "bench/test_inprocess.py",
                f"--benchmark-json={out}",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=600,
        )
        data = json.loads(out.read_text())
    result = {}
    for bench in data["benchmarks"]:
        median_us = bench["stats"]["median"] * 1e6
        match = re.search(r"\[(\d+)-(\w+)\]", bench["name"])
        if match:
            rows, backend = match.groups()
            result[f"{backend}_{rows}_rows_us_per_row"] = round(median_us / int(rows), 2)
        else:
            result[bench["name"].removeprefix("test_hot_path_") + "_us"] = round(median_us, 1)
    return result


def bench(concurrency: int) -> dict:
    rows: list[dict] = []
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        one = tmp / "one.json"
        one.write_text(json.dumps({"instances": [PENGUIN]}))
        thousand = tmp / "thousand.json"
        thousand.write_text(json.dumps({"instances": [PENGUIN] * 1000}))
        for filename, text in SERVING.items():
            (tmp / filename).write_text(text)
        for name, (command, env_template, requests) in SERVERS.items():
            env = {k: v.replace("{tmp}", str(tmp)) for k, v in env_template.items()}
            log.info("benchmarking %s", name)
            with running(
                ["sh", "-c", f"exec {command}"], ROOT, tmp / "server.log", **env
            ) as server:
                url = server.base + "/predict"
                ab(url, one, min(500, requests), min(20, concurrency))  # warm-up
                result = ab(url, one, requests, concurrency)
                result.update(rss_mb(server.proc.pid))
                if name == DEFAULT:
                    batch = ab(url, thousand, 200, 4)
                    extra["batch_1000"] = {**batch, "rows_per_s": round(batch["req_per_s"] * 1000)}
            rows.append({"server": name, **result})
            log.info("%s: %s", name, result)
        extra["start_to_ready_s"] = start_to_ready(tmp)
    extra["in_process"] = in_process()
    baseline = rows[0]["req_per_s"]
    floor = next(r for r in rows if r["server"] == FLOOR)["req_per_s"]
    for row in rows:
        row["ratio"] = round(row["req_per_s"] / baseline, 2)
        row["of_floor"] = round(row["req_per_s"] / floor, 3)
    return {"rows": rows, **extra}


def table(result: dict) -> str:
    lines = [
        "| server | req/s | × baseline | % of floor | p50 ms | p99 ms | failed | "
        "RSS/worker MB | RSS total MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['server']} | {r['req_per_s']:.0f} | {r['ratio']:.1f} | "
            f"{100 * r['of_floor']:.0f}% | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['failed']:.0f} | {r['worker_mb']:.0f} | {r['total_mb']:.0f} |"
        )
    b = result["batch_1000"]
    p = result["in_process"]
    lines += [
        "",
        f"- 1000 instances per request (default server, ab -c 4 -n 200): "
        f"{b['rows_per_s']:,} rows/s, p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms, "
        f"{b['failed']:.0f} failed.",
        f"- In process (pytest-benchmark median): onnx {p['onnx_1_rows_us_per_row']} µs for "
        f"one row, {p['onnx_1000_rows_us_per_row']} µs/row in 1000; sklearn "
        f"{p['sklearn_1_rows_us_per_row']} µs for one row, "
        f"{p['sklearn_1000_rows_us_per_row']} µs/row in 1000.",
        f"- Hot path in process (default app, pytest-benchmark median): validation "
        f"{p['validate_us']} µs, features + onnxruntime {p['onnx_1_rows_us_per_row']} µs, "
        f"one JSON access-log line {p['access_log_line_us']} µs, a whole single-row POST "
        f"/predict through the ASGI app without a socket {p['whole_request_us']} µs "
        f"(one event-loop turn included).",
        f"- Start to ready (artifact local, default server): {result['start_to_ready_s']} s.",
    ]
    return "\n".join(lines)


def write(result: dict) -> str:
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tool": "ab (apache2-utils)",
        "workers": os.environ.get("WEB_CONCURRENCY", str(os.cpu_count())),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
    text = (
        f"{table(result)}\n\n`ab -c 100`, single-row requests unless noted, "
        f"{meta['cores']} cores shared with ab, {meta['workers']} workers, {meta['date']}."
    )
    (RESULTS / "bench.md").write_text(text + "\n")
    fill_readme("bench", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%s", write(bench(args.concurrency)))
    log.info("%s", protocols.write(protocols.measure(protocols.BUDGET)))


if __name__ == "__main__":
    main()
