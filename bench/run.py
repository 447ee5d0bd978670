"""Load test with Apache Bench: lockserve against the lecture's Flask + gunicorn baseline.

Both servers serve the artifact dvc.lock pins, on free loopback ports, in one run. Each is
warmed up, then hit with `ab -c 100` (HTTP/1.0, single-row requests, as in the lecture).
Results go to bench/results/rest.json, bench/results/rest.md and the README table.

    python -m bench.run [--requests 2000] [--concurrency 100]
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

from tests.servers import running

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 47.5,
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 217.0,
    "body_mass_g": 5200.0,
    "sex": "male",
}
# Shell commands: each server binds 127.0.0.1:$PORT, a free port chosen per run.
SERVERS = {
    "flask + gunicorn -w 4 (lecture baseline)": (
        f"{BIN}/gunicorn -w 4 -b 127.0.0.1:$PORT --access-logfile - bench.flask_baseline:app"
    ),
    "lockserve (gunicorn + uvicorn workers, sklearn)": (
        f"{BIN}/gunicorn -c api/gunicorn_conf.py api.main:app"
    ),
}


def ab(url: str, body: Path, requests: int, concurrency: int) -> dict[str, float]:
    """Run ab against ``url``; return req/s, p50/p99 latency (ms) and failure counts."""
    cmd = [
        "ab",
        "-q",
        "-n",
        str(requests),
        "-c",
        str(concurrency),
        "-s",
        "30",
        "-p",
        str(body),
        "-T",
        "application/json",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout

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


def bench(requests: int, concurrency: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "one.json"
        body.write_text(json.dumps({"instances": [PENGUIN]}))
        for name, command in SERVERS.items():
            log.info("benchmarking %s", name)
            with running(["sh", "-c", f"exec {command}"], ROOT, Path(tmp) / "server.log") as server:
                url = server.base + "/predict"
                ab(url, body, min(200, requests), min(20, concurrency))  # warm-up
                result = ab(url, body, requests, concurrency)
            rows.append({"server": name, **result})
            log.info("%s: %s", name, result)
    baseline = rows[0]["req_per_s"]
    for row in rows:
        row["ratio"] = round(row["req_per_s"] / baseline, 2)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| server | req/s | ratio | p50 ms | p99 ms | failed |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['req_per_s']:.0f} | {r['ratio']:.2f}x | "
            f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['failed']:.0f} |"
        )
    return "\n".join(lines)


def write(rows: list[dict]) -> str:
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tool": "ab (apache2-utils)",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rest.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = (
        f"{table(rows)}\n\n`ab -c {rows[0]['concurrency']} -n {rows[0]['requests']}`, "
        f"single-row requests, {meta['cores']} cores shared with ab, {meta['date']}."
    )
    (RESULTS / "rest.md").write_text(text + "\n")
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in content and end in content:
        head, rest = content.split(start, 1)
        readme.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = bench(args.requests, args.concurrency)
    log.info("%s", write(rows))


if __name__ == "__main__":
    main()
