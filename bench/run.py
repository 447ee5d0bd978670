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
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import fill_readme, layers, profile, protocols, startup
from tests.conftest import PENGUIN
from tests.servers import running

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
SERVE = f"{BIN}/python -m api.serve"  # the production server: granian
GUNICORN = f"{BIN}/gunicorn -c api/gunicorn_conf.py"  # the alternative measured beside it
BASELINE = "flask + gunicorn -w 4 (lecture baseline, sklearn)"
DEFAULT = "lockserve default (onnx)"
FLOOR = "HTTP floor (hello-world, same server and workers)"
GUNICORN_FLOOR = "HTTP floor, gunicorn + uvicorn"
BACKPRESSURE = "lockserve default (onnx), at most 4 requests a worker (GRANIAN_BACKPRESSURE=4)"
# the default server takes the large requests too
LARGE = {"LOCKSERVE_MAX_BATCH": "10000", "LOCKSERVE_MAX_BODY_BYTES": str(8 << 20)}
# name -> (shell command binding 127.0.0.1:$PORT, extra environment, requests)
SERVERS: dict[str, tuple[str, dict[str, str], int]] = {
    BASELINE: (
        f"{BIN}/gunicorn -w 4 -b 127.0.0.1:$PORT --access-logfile - bench.flask_baseline:app",
        {},
        2000,
    ),
    "lockserve sklearn, batching off": (
        SERVE,
        {"LOCKSERVE_BACKEND": "sklearn", "LOCKSERVE_RUNNER": "thread"},
        2000,
    ),
    "lockserve sklearn, batching on": (
        SERVE,
        {"LOCKSERVE_BACKEND": "sklearn", "LOCKSERVE_RUNNER": "batch"},
        10000,
    ),
    DEFAULT: (SERVE, LARGE, 20000),
    "lockserve default (onnx), gunicorn + uvicorn instead of granian": (
        f"{GUNICORN} api.main:app",
        LARGE,
        20000,
    ),
    BACKPRESSURE: (SERVE, {**LARGE, "GRANIAN_BACKPRESSURE": "4"}, 20000),
    "lockserve canary 50/50, two variants (onnx)": (
        SERVE,
        {"LOCKSERVE_SERVING_FILE": "{tmp}/canary.yaml"},
        20000,
    ),
    "lockserve bandit, two variants (onnx)": (
        SERVE,
        {"LOCKSERVE_SERVING_FILE": "{tmp}/bandit.yaml", "LOCKSERVE_STATE_DB": "{tmp}/state.sqlite"},
        20000,
    ),
    "lockserve canary, four variants (onnx)": (
        SERVE,
        {"LOCKSERVE_SERVING_FILE": "{tmp}/canary4.yaml"},
        20000,
    ),
    FLOOR: (f"{SERVE} bench.floor:app", {}, 20000),
    GUNICORN_FLOOR: (f"{GUNICORN} bench.floor:app", {}, 20000),
}
# Two variants of the pinned model, loaded side by side (both at HEAD: routing and memory
# cost, whatever the models).
SERVING = {
    "canary.yaml": "strategy: canary\nvariants:\n  a: {rev: HEAD, weight: 50}\n"
    "  b: {rev: HEAD, weight: 50}\n",
    "bandit.yaml": "strategy: bandit\nvariants:\n  a: {rev: HEAD}\n  b: {rev: HEAD}\n",
    "canary4.yaml": "strategy: canary\nvariants:\n"
    + "".join(f"  {v}: {{rev: HEAD, weight: 25}}\n" for v in "abcd"),
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
    # PSS counts a page shared by n processes as 1/n in each: their sum is what all use
    pss = sum(p.memory_full_info().pss for p in [master, *workers]) / 1e6
    return {
        "master_mb": round(master.memory_info().rss / 1e6, 1),
        "worker_mb": round(max(per_worker), 1) if per_worker else 0.0,
        "total_mb": round((master.memory_info().rss / 1e6) + sum(per_worker), 1),
        "pss_total_mb": round(pss, 1),
    }


def pinned() -> Any:
    """The model dvc.lock pins, from the work tree, as the resolver hands it over (its md5 is
    checked when it is loaded)."""
    from api.resolver import Resolved

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    md5 = lock["stages"]["train"]["outs"][0]["md5"]
    data = (ROOT / "models/model.zip").read_bytes()
    return Resolved("model", "models/model.zip", md5, "HEAD", "0" * 40, "workspace", data)


def random_instances(schema: Any, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` instances drawn inside the schema's ranges and categories."""
    rng = random.Random(seed)
    return [
        {
            f.name: round(rng.uniform(f.min, f.max), 1)
            if f.type == "number"
            else rng.choice(f.categories)
            for f in schema.features
        }
        for _ in range(n)
    ]


def graph_alone(artifact: Any, instances: list[dict[str, Any]], repeats: int = 20) -> float:
    """rows/s of the ONNX graph alone, in process on one thread, over the instances' feature
    matrix (the median of ``repeats`` runs)."""
    from api.backends import OnnxBackend

    backend = OnnxBackend(artifact)  # one intra-op thread, as a worker runs it
    rows = [tuple(i[name] for name in artifact.schema.names) for i in instances]
    matrix = backend._features.rows(rows)  # noqa: SLF001 - the graph's input, made once
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        backend._run(matrix)  # noqa: SLF001
        times.append(time.perf_counter() - started)
    return round(len(rows) / sorted(times)[len(times) // 2])


def in_process_app(resolved: Any) -> Any:
    """The default app on ``resolved``, in this process, taking 10,000-row requests, its JSON
    log lines to /dev/null."""
    from api import logs
    from api.app import create_app
    from api.settings import Settings
    from api.store import ModelStore, load_model

    root = logging.getLogger()
    kept = root.handlers[:], root.level
    logs.configure("INFO")  # its handler writes to /dev/null; the caller's own log stays
    logs.HANDLER.setStream(open(os.devnull, "w"))  # noqa: SIM115
    root.handlers[:], root.level = kept
    settings = Settings(max_batch=10000, max_body_bytes=8 << 20, grpc_port=0)
    return create_app(settings, ModelStore({"default": load_model("default", resolved)}))


def large_requests(url: str, tmp: Path, app: Any, steps: bool) -> dict[str, dict[str, float]]:
    """1000- and 10,000-row requests of random rows end to end (ab), against the graph alone
    on the same rows in the same run; with ``steps``, each step's cost in process (``app``: the
    in-process default app)."""
    out = {}
    artifact = app.state.store.get("default").artifact
    for rows, requests, concurrency in ((1000, 300, 8), (10000, 40, 4)):
        instances = random_instances(artifact.schema, rows)
        body = tmp / f"rows{rows}.json"
        body.write_text(json.dumps({"instances": instances}))
        ab(url, body, 2 * concurrency, concurrency)  # warm-up
        result = ab(url, body, requests, concurrency)
        end_to_end = round(result["req_per_s"] * rows)
        alone = graph_alone(artifact, instances)
        out[str(rows)] = {
            **result,
            "rows_per_s": end_to_end,
            "graph_alone_rows_per_s": alone,
            "of_graph_alone": round(end_to_end / alone, 2),
        }
        if steps:  # the same for every server: measured once
            out[str(rows)]["in_process_us"] = profile.in_process_parts(app, body.read_bytes())
    return out


def by_layer(tmp: Path, one: Path) -> list[dict[str, Any]]:
    """Each layer of the single-row path (bench/layers.py) served alone: the workers' CPU per
    request, and what the layer adds to the one before (the floor first)."""
    out: list[dict[str, Any]] = []
    for layer in ["floor", *layers.LAYERS]:
        target = "bench.floor:app" if layer == "floor" else "bench.layers:app"
        with running(
            ["sh", "-c", f"exec {SERVE} {target}"],
            ROOT,
            tmp / "layer.log",
            LOCKSERVE_BENCH_LAYER=layer,
        ) as server:
            url = server.base + "/predict"
            profile.cpu_per_request(server.proc.pid, url, one, 3000)  # warm-up
            runs = [profile.cpu_per_request(server.proc.pid, url, one, 20000) for _ in range(3)]
            cost = sorted(runs, key=lambda r: r["server_cpu_us_per_request"])[1]  # the median
        before = out[-1]["server_cpu_us_per_request"] if out else 0.0
        what = "HTTP floor (hello-world)" if layer == "floor" else layers.LAYERS[layer]
        out.append(
            {"layer": what, **cost, "adds_us": round(cost["server_cpu_us_per_request"] - before, 1)}
        )
        log.info("layer %s: %s", layer, out[-1])
    return out


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
        elif bench["name"] == "test_hot_path_access_log_1000_lines":
            result["access_log_line_us"] = round(median_us / 1000, 2)
        else:
            result[bench["name"].removeprefix("test_hot_path_") + "_us"] = round(median_us, 1)
    return result


def floor_of(name: str) -> str:
    """The HTTP floor a server's req/s is set against: the same server's hello-world."""
    return GUNICORN_FLOOR if "gunicorn + uvicorn" in name else FLOOR


def bench(concurrency: int) -> dict:
    rows: list[dict] = []
    extra: dict = {}
    app = in_process_app(pinned())  # the large requests: their rows and steps in process
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        one = tmp / "one.json"
        one.write_text(json.dumps({"instances": [PENGUIN]}))
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
                result.update(profile.cpu_per_request(server.proc.pid, url, one, requests))
                if env.get("LOCKSERVE_MAX_BATCH"):  # the large requests too
                    extra.setdefault("large_by_server", {})[name] = large_requests(
                        url, tmp, app, steps=name == DEFAULT
                    )
                if name == DEFAULT:
                    extra["profile"] = profile.profile(server.proc.pid, url, one, 60000, 5)
                if name == FLOOR:
                    extra["floor_cpu_us"] = result["server_cpu_us_per_request"]
            rows.append({"server": name, **result})
            log.info("%s: %s", name, result)
        extra["layers"] = by_layer(tmp, one)
    extra["startup"] = {"local": startup.local(), "deploy_host_s3": startup.deploy_host()}
    extra["in_process"] = in_process()
    baseline = rows[0]["req_per_s"]
    floors = {r["server"]: r["req_per_s"] for r in rows if r["server"] in (FLOOR, GUNICORN_FLOOR)}
    for row in rows:
        row["ratio"] = round(row["req_per_s"] / baseline, 2)
        row["of_floor"] = round(row["req_per_s"] / floors[floor_of(row["server"])], 3)
    return {"rows": rows, **extra}


def table(result: dict) -> str:
    lines = [
        "| server | req/s | × baseline | % of its floor | p50 ms | p99 ms | failed | "
        "RSS/worker MB | RSS total MB | PSS total MB | server CPU µs/request |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['server']} | {r['req_per_s']:.0f} | {r['ratio']:.1f} | "
            f"{100 * r['of_floor']:.0f}% | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['failed']:.0f} | {r['worker_mb']:.0f} | {r['total_mb']:.0f} | "
            f"{r['pss_total_mb']:.0f} | {r['server_cpu_us_per_request']:.0f} |"
        )
    p = result["in_process"]
    lines += ["", "Large requests, random rows inside the schema:", ""]
    lines += [
        "| server | rows/request | ab -c | req/s | rows/s end to end | "
        "graph alone, 1 thread, rows/s | × graph alone | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for server, large in result["large_by_server"].items():
        for rows, b in large.items():
            lines.append(
                f"| {server} | {int(rows):,} | {b['concurrency']} | {b['req_per_s']:.1f} | "
                f"{b['rows_per_s']:,} | {b['graph_alone_rows_per_s']:,} | "
                f"{b['of_graph_alone']} | {b['p50_ms']:.0f} | {b['p99_ms']:.0f} | "
                f"{b['failed']:.0f} |"
            )
    lines += [
        "",
        "What each layer of a single-row request adds to the workers' CPU per request, each "
        "served alone under the default server (bench/layers.py):",
        "",
        "| layer | req/s | CPU µs/request | adds µs |",
        "|---|---|---|---|",
    ]
    for row in result["layers"]:
        lines.append(
            f"| {row['layer']} | {row['req_per_s']} | {row['server_cpu_us_per_request']:.0f} | "
            f"{row['adds_us']:+.0f} |"
        )
    default = result["large_by_server"][DEFAULT]
    steps = list(next(iter(default.values()))["in_process_us"])
    lines += [
        "",
        "The same requests' steps in process, one thread, µs per request (best of 5):",
        "",
        "| rows/request | " + " | ".join(steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for rows, b in default.items():
        cells = " | ".join(f"{b['in_process_us'][s]:,.0f}" for s in steps)
        lines.append(f"| {int(rows):,} | {cells} |")
    up = result["startup"]
    local, host = up["local"], up["deploy_host_s3"]
    lines += [
        "",
        "Where a single-row request's time goes (default server under ab -c 100, py-spy "
        f"sampling both workers, {result['profile']['samples']:,} samples; µs = share × the "
        "workers' CPU per request in an unsampled run):",
        "",
        profile.table(result["profile"], result.get("floor_cpu_us")),
        "",
        f"- In process (pytest-benchmark median): onnx {p['onnx_1_rows_us_per_row']} µs for "
        f"one row, {p['onnx_1000_rows_us_per_row']} µs/row in 1000; sklearn "
        f"{p['sklearn_1_rows_us_per_row']} µs for one row, "
        f"{p['sklearn_1000_rows_us_per_row']} µs/row in 1000.",
        f"- Hot path in process (default app, pytest-benchmark median): validation "
        f"{p['validate_us']} µs, features + onnxruntime {p['onnx_1_rows_us_per_row']} µs, "
        f"one JSON access-log line {p['access_log_line_us']} µs, a whole single-row POST "
        f"/predict through the ASGI app without a socket {p['whole_request_us']} µs "
        f"(one event-loop turn included).",
        f"- Start to ready (median of 3): artifact in the work tree {local['ready_s']} s "
        f"(reading dvc.lock {local['lock_ms']:.0f} ms, load {local['load_ms']:.0f} ms); a fresh "
        f"deploy host fetching it from S3 on loopback {host['ready_s']} s (lock "
        f"{host['lock_ms']:.0f} ms, fetch {host['fetch_ms']:.0f} ms, verify "
        f"{host['verify_ms']:.1f} ms, load {host['load_ms']:.0f} ms).",
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
