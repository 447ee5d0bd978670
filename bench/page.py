"""On-device figures and the README's screenshot: `make bench-page` (python -m bench.page; not
part of `make test`).

Serves the model dvc.lock pins at HEAD with the repo's own server, opens the page at / in
headless Chromium (Debian's) and measures in one run:
- parity on ``--rows`` rows (the test split, real values drawn from it, values anywhere in the
  schema): labels equal, and the largest difference of the browser's probabilities from the
  server's;
- in a fresh browser context each run, the first on-device answer: download and SHA-256 check
  of the graph and spec, session creation, then inference of one row and of all rows;
- the baseline, in the same run and page: the same rows answered by the server (/predict
  through the page's fetch), one row and all rows.
Then it writes docs/page.png: the form answered by the server and on the device.
Figures: bench/results/page.json, page.md and the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench import publish
from contract.artifact import read
from tests.browser import chromium, compare, on_device, sampled, tab
from tests.servers import GUNICORN, http, running

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "page.png"
TIMED = """async ([rows, where]) => {
  const started = performance.now();
  const answer = where === "device"
    ? await window.lockserve.predictOnDevice(rows)
    : await window.lockserve.predictOnServer(rows);
  const ms = performance.now() - started;
  if (where === "server" && !answer.ok) throw new Error(JSON.stringify(answer.body));
  return { ms, timings: answer.timings ?? null };
}"""


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh browser contexts")
    parser.add_argument("--rows", type=int, default=300, help="rows for parity and batches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    test_split = pd.read_parquet(ROOT / "data" / "prepared" / "test.parquet")
    with tempfile.TemporaryDirectory(prefix="lockserve-bench-page-") as tmp:
        with (
            running(
                GUNICORN,
                ROOT,
                Path(tmp) / "server.log",
                LOCKSERVE_REV="HEAD",
                LOCKSERVE_GRPC_PORT="0",
                WEB_CONCURRENCY="1",
            ) as server,
            chromium() as browser,
        ):
            model = http("GET", server.base + "/model")[1]
            schema = read((ROOT / "models" / "model.zip").read_bytes()).schema
            rows = sampled(schema, test_split, args.rows)
            status, expected = http("POST", server.base + "/predict", {"instances": rows})
            assert status == 200, expected
            times: dict[str, list[float]] = {
                k: []
                for k in (
                    "download_verify_ms",
                    "session_ms",
                    "device_first_ms",
                    "device_1_ms",
                    "device_all_ms",
                    "server_1_ms",
                    "server_all_ms",
                )
            }
            worst, differing = 0.0, 0
            for run in range(args.runs):
                log.info("run %d of %d", run + 1, args.runs)
                with tab(browser, server.base + "/") as seen:
                    page = seen.page
                    first = page.evaluate(TIMED, [rows[:1], "device"])
                    times["device_first_ms"].append(first["ms"])
                    times["download_verify_ms"].append(first["timings"]["download_verify_ms"])
                    times["session_ms"].append(first["timings"]["session_ms"])
                    for where in ("device", "server"):
                        page.evaluate(TIMED, [rows, where])  # warm
                        times[f"{where}_1_ms"].append(page.evaluate(TIMED, [rows[:1], where])["ms"])
                        times[f"{where}_all_ms"].append(page.evaluate(TIMED, [rows, where])["ms"])
                    device = on_device(page, rows)
                    run_worst, run_differing = compare(
                        expected["predictions"], device["predictions"]
                    )
                    worst, differing = max(worst, run_worst), max(differing, run_differing)
            with tab(browser, server.base + "/") as seen:
                page = seen.page
                page.check("#device-toggle")
                page.click("#predict")
                page.wait_for_selector("#device-status[data-done=true]")
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "md5": model["md5"],
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "rows": len(rows),
        "rows_with_missing": sum(None in r.values() for r in rows),
        "labels_differing": differing,
        "max_abs_diff": worst,
        "graph_bytes": len(read((ROOT / "models" / "model.zip").read_bytes()).onnx or b""),
        "times_ms": {k: summary(v) for k, v in times.items()},
    }
    publish("page", "bench-page", result, render(result))
    return 0


def render(r: dict[str, Any]) -> str:
    """The README's table and notes from a result."""
    t = r["times_ms"]

    def cell(key: str) -> str:
        s = t[key]
        return f"{s['median']:.1f} ms ({s['min']:.1f}–{s['max']:.1f})"

    n = r["rows"]
    return "\n".join(
        [
            f"Measured {r['date']} on {r['cpus']} cores, model md5 `{r['md5']}`, "
            f"{r['runs']} fresh browser contexts (median, min–max):",
            "",
            "| | on this device (onnxruntime-web, wasm, 1 thread) | server (`/predict` from "
            "the page) |",
            "|---|---|---|",
            f"| first answer (download + SHA-256 check + session + 1 row) | "
            f"{cell('device_first_ms')} | — |",
            f"| of which download + SHA-256 check ({r['graph_bytes']:,} bytes of graph) | "
            f"{cell('download_verify_ms')} | — |",
            f"| of which session creation | {cell('session_ms')} | — |",
            f"| 1 row | {cell('device_1_ms')} | {cell('server_1_ms')} |",
            f"| {n} rows | {cell('device_all_ms')} | {cell('server_all_ms')} |",
            "",
            f"Parity on {n} rows ({r['rows_with_missing']} with a missing value): "
            + (
                "every label equal"
                if not r["labels_differing"]
                else f"{r['labels_differing']} labels differ"
            )
            + f", largest probability difference {r['max_abs_diff']:.2e} (the tests' bound: "
            "1e-5).",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
