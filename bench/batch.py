"""Batch and static serving figures: `make bench-batch` (python -m bench.batch; not in `make test`).

Batch scoring (batch/) of generated tables (penguin rows drawn with replacement, 20 parquet
parts) at each ``--rows`` size, with the model dvc.lock pins at HEAD:
- the baseline, measured in the same run: one process reading the parts one by one with pandas
  and scoring them with the same Scorer (validation, preprocessing, onnxruntime), no Dask;
- a LocalCluster of 1 worker and of 2 workers (one thread each), and a separately started
  `dask scheduler` + `dask worker --nworkers 2` over TCP on loopback;
rows/s, the scaling efficiency from 1 to 2 workers, and the peak RSS of each worker.

Static serving: a 100,000-row table scored the same way, tracked by DVC in a scratch repo and
served by the production server (2 workers): `ab -c 100` GET /predictions/{key} against POST
/predict of the same row on the same server.
Figures: bench/results/batch.json, batch.md and the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from api.resolver import Resolved, resolve
from batch import score
from batch.rows import Scorer
from bench import publish
from bench.run import ab
from tests.conftest import PENGUIN, RAW, dvc, pinned_repo, run
from tests.servers import SERVER, running
from tests.system.test_batch import dask_cluster

log = logging.getLogger("lockserve.bench")

ROOT = Path(__file__).resolve().parents[1]
PARTS = 20
LOOKUP_ROWS = 100_000
AB_REQUESTS = 20_000


def generate(rows: int, out: Path, seed: int = 0) -> Path:
    """``rows`` penguins drawn with replacement from the raw table, with an ``id``, as PARTS
    parquet files."""
    raw = pd.read_csv(RAW).drop(columns=["species"], errors="ignore")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    per = -(-rows // PARTS)
    for part in range(PARTS):
        start = part * per
        n = max(0, min(per, rows - start))
        frame = raw.iloc[rng.integers(0, len(raw), n)].reset_index(drop=True)
        frame.insert(0, "id", np.arange(start, start + n, dtype="int64"))
        frame.to_parquet(out / f"part.{part:02d}.parquet", index=False)
    return out


class PeakRss:
    """Polls the RSS of some processes every 0.1 s; ``peaks`` per pid, in MB."""

    def __init__(self, pids: list[int]) -> None:
        self.peaks = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in self.peaks:
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                    self.peaks[pid] = max(self.peaks[pid], rss)
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def baseline(source: Path, out: Path, resolved: Resolved) -> tuple[float, list[float]]:
    """One process, no Dask: each part read with pandas, scored, written."""
    out.mkdir()
    with PeakRss([os.getpid()]) as rss:
        started = time.perf_counter()
        scorer = Scorer(resolved.data, resolved.md5)
        for part in sorted(source.glob("*.parquet")):
            scorer(pd.read_parquet(part), keep=["id"]).to_parquet(out / part.name, index=False)
        seconds = time.perf_counter() - started
    return seconds, list(rss.peaks.values())


def on_dask(client: Any, source: Path, out: Path, resolved: Resolved) -> tuple[float, list[float]]:
    """make score's path on ``client``'s cluster: wall seconds, each worker's peak RSS."""
    pids = list(client.run(os.getpid).values())
    with PeakRss(pids) as rss:
        started = time.perf_counter()
        score.score(str(source), str(out), resolved, ["id"], client)
        seconds = time.perf_counter() - started
    return seconds, list(rss.peaks.values())


def local_cluster(workers: int) -> contextlib.AbstractContextManager[Any]:
    """make score's own LocalCluster: ``workers`` processes of one thread, loopback only."""
    return score.cluster(None, workers)


@contextlib.contextmanager
def separate_cluster(tmp: Path) -> Iterator[Any]:
    from distributed import Client

    with dask_cluster(tmp, workers=2) as address, Client(address) as client:
        yield client


def batch_figures(rows: int, tmp: Path, resolved: Resolved) -> dict[str, Any]:
    source = generate(rows, tmp / f"in-{rows}")
    runs: dict[str, Callable[[Path], tuple[float, list[float]]]] = {
        "single process, pandas + onnxruntime (baseline)": lambda out: baseline(
            source, out, resolved
        ),
    }
    clusters = {
        "LocalCluster, 1 worker": lambda: local_cluster(1),
        "LocalCluster, 2 workers": lambda: local_cluster(2),
        "dask scheduler + 2 workers over TCP": lambda: separate_cluster(tmp),
    }
    out: dict[str, Any] = {}
    for name, job in runs.items():
        seconds, peaks = job(tmp / f"out-{rows}-baseline")
        out[name] = {"seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peaks}
    for i, (name, make) in enumerate(clusters.items()):
        with make() as client:
            seconds, peaks = on_dask(client, source, tmp / f"out-{rows}-{i}", resolved)
        out[name] = {"seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mb": peaks}
        log.info("%s rows, %s: %.1f s", f"{rows:,}", name, seconds)
    one, two = out["LocalCluster, 1 worker"], out["LocalCluster, 2 workers"]
    out["scaling_efficiency"] = two["rows_per_s"] / (2 * one["rows_per_s"])
    return out


def lookup_figures(tmp: Path, resolved: Resolved) -> dict[str, Any]:
    """Score LOOKUP_ROWS rows into a DVC-tracked table of a scratch repo; serve it; ab both."""
    repo = pinned_repo(tmp / "lookup", {"bench": resolved.data})
    source = generate(LOOKUP_ROWS, tmp / "lookup-in")
    with local_cluster(2) as client:
        score.score(str(source), str(repo / "predictions"), resolved, ["id"], client)
    dvc("add", "-q", "predictions", cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-q", "-m", "answers"], cwd=repo)
    serving = tmp / "serving.yaml"
    serving.write_text(
        "strategy: single\nvariants:\n  default: {rev: HEAD}\n"
        "lookup: {path: predictions, key: id}\n"
    )
    body = tmp / "one.json"
    body.write_text(json.dumps({"instances": [PENGUIN]}))
    started = time.perf_counter()
    with running(
        SERVER,
        ROOT,
        tmp / "server.log",
        LOCKSERVE_REPO=str(repo),
        LOCKSERVE_SERVING_FILE=str(serving),
        LOCKSERVE_PIDFILE=str(tmp / "server.pid"),
        WEB_CONCURRENCY="2",
    ) as server:
        ready_s = time.perf_counter() - started
        key = f"{server.base}/predictions/{LOOKUP_ROWS // 2}"
        ab(key, None, 2000, 100)  # warm-up
        ab(f"{server.base}/predict", body, 2000, 100)
        result = {
            "rows": LOOKUP_ROWS,
            "start_to_ready_s": ready_s,
            "lookup": ab(key, None, AB_REQUESTS, 100),
            "predict (baseline)": ab(f"{server.base}/predict", body, AB_REQUESTS, 100),
            "requests": AB_REQUESTS,
            "concurrency": 100,
        }
        result["server_rss_mb"] = (
            sum(
                p.memory_info().rss
                for p in psutil.Process(server.proc.pid).children(recursive=True)
            )
            / 2**20
        )
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "| rows | run | seconds | rows/s | × baseline | peak RSS per process (MB) |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for rows, runs in result["batch"].items():
        base = next(v for k, v in runs.items() if "baseline" in k)["rows_per_s"]
        for name, r in runs.items():
            if name == "scaling_efficiency":
                continue
            rss = ", ".join(f"{p:.0f}" for p in r["peak_rss_mb"])
            lines.append(
                f"| {int(rows):,} | {name} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                f"{r['rows_per_s'] / base:.2f} | {rss} |"
            )
    eff = ", ".join(
        f"{int(rows):,} rows: {runs['scaling_efficiency']:.0%}"
        for rows, runs in result["batch"].items()
    )
    look = result["lookup"]
    lines += [
        "",
        f"Scaling efficiency from 1 to 2 local workers (rows/s of 2 ÷ twice that of 1): {eff}.",
        "",
        f"Static serving, {look['rows']:,}-row table, 2 workers, "
        f"`ab -c {look['concurrency']} -n {look['requests']:,}` (same server, same row):",
        "",
        "| request | req/s | p50 ms | p99 ms | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("lookup", "predict (baseline)"):
        r = look[name]
        label = "GET /predictions/{key}" if name == "lookup" else "POST /predict (baseline)"
        lines.append(
            f"| {label} | {r['req_per_s']:,.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['failed']:.0f} |"
        )
    meta = result["machine"]
    lines += [
        "",
        f"Server start to ready with the table: {look['start_to_ready_s']:.1f} s; its processes' "
        f"RSS {look['server_rss_mb']:.0f} MB. {meta['cores']} cores (shared by the workers, "
        f"the client and ab), {meta['date']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("distributed", "dvc", "lockserve.resolver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    resolved = resolve(ROOT, "HEAD", None)
    result: dict[str, Any] = {
        "model": {"md5": resolved.md5, "rev": "HEAD", "commit": resolved.commit},
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "batch": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        tmp = Path(scratch)
        for rows in args.rows:
            result["batch"][str(rows)] = batch_figures(rows, tmp, resolved)
        result["lookup"] = lookup_figures(tmp, resolved)
    publish("batch", "bench-batch", result, table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
