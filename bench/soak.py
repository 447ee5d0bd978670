"""A bounded soak: `make soak` (python -m bench.soak; not part of `make test`).

One server (api.serve, 2 workers, the model dvc.lock pins) on a free loopback port takes mixed
good and bad requests from a fixed number of keep-alive clients for ``--minutes`` (10), with
a reload (``python -m api.reload``) every ``--reload-every`` seconds (120). Every minute it
samples each worker's RSS and the open descriptors of the master and workers (sockets left
out for workers: their connections follow the load). Promises
checked at the end (exit 1 when one is broken): no 5xx and no failed connection; every reload
reported "reloaded"; each worker's RSS, taken at the same point of each generation of workers,
within 10% of the first generation's; file descriptors as many at the end as at the start.
Figures: bench/results/soak.json and the README.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from api.reload import reload
from bench import fill_readme
from tests.conftest import PENGUIN
from tests.servers import SERVER, Server, free_port

log = logging.getLogger("lockserve.soak")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
JSON = {"content-type": "application/json"}


def _body(instances: list) -> bytes:
    return json.dumps({"instances": instances}).encode()


# (method, path, body, headers): good and bad, as a service meets them
MIX: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", "/predict", _body([PENGUIN]), JSON),
    ("POST", "/predict", _body([PENGUIN] * 50), JSON),
    ("POST", "/predict", _body([PENGUIN]), JSON),
    ("POST", "/predict", _body([{**PENGUIN, "island": "Atlantis"}]), JSON),
    ("POST", "/predict", b'{"instances": [', JSON),
    ("POST", "/predict", _body([PENGUIN]), {"content-type": "text/plain"}),
    (
        "POST",
        "/predict",
        _body([{**PENGUIN, "body_mass_g": None, "sex": None, "bill_depth_mm": None}]),
        JSON,
    ),
    ("POST", "/feedback", json.dumps({"request_id": "nope", "reward": 1}).encode(), JSON),
    ("GET", "/model", None, {}),
    ("GET", "/health/ready", None, {}),
    ("GET", "/nowhere", None, {}),
    ("GET", "/metrics", None, {}),
]


class Load:
    """``clients`` threads, each with one keep-alive connection, sending MIX at random."""

    def __init__(self, port: int, clients: int, seed: int = 0) -> None:
        self.port, self.clients, self.seed = port, clients, seed
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.stale_retries = 0  # a reused connection the server had closed, sent again
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed + index)
        conn = self._connection()
        while not self.stop.is_set():
            method, path, body, headers = rng.choice(MIX)
            try:
                status = self._ask(conn, method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                # a keep-alive connection the server closed between requests (a worker that
                # drained at a reload) is retried once on a new one; anything else counts
                conn.close()
                conn = self._connection()
                with self._lock:
                    self.stale_retries += 1
                try:
                    status = self._ask(conn, method, path, body, headers)
                except (OSError, http.client.HTTPException) as again:
                    with self._lock:
                        self.failures[f"{type(exc).__name__} then {type(again).__name__}"] += 1
                    conn.close()
                    conn = self._connection()
                    continue
            with self._lock:
                self.statuses[status] += 1
        conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    @staticmethod
    def _ask(
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> int:
        """One request on ``conn``; its status (the connection closed if the server said so)."""
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.getheader("connection", "").lower() == "close":
            conn.close()
        return response.status


def sample(master: psutil.Process) -> dict:
    """RSS (MB) of each worker, its open descriptors other than sockets (its connections
    come and go with the load), and the master's descriptors (it holds no connections)."""
    workers = sorted(master.children(), key=lambda p: p.pid)
    return {
        "at": round(time.monotonic(), 1),
        "workers": {w.pid: round(w.memory_info().rss / 1e6, 1) for w in workers},
        "worker_fds": {w.pid: w.num_fds() - len(w.net_connections("all")) for w in workers},
        "master_fds": master.num_fds(),
        "master_mb": round(master.memory_info().rss / 1e6, 1),
    }


def soak(minutes: float, reload_every: float, clients: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="lockserve-soak-"))
    port = free_port()
    pidfile = tmp / "server.pid"
    server = Server(
        SERVER,
        ROOT,
        port,
        tmp / "log",
        WEB_CONCURRENCY="2",
        LOCKSERVE_PIDFILE=str(pidfile),
        LOCKSERVE_STATE_DB=str(tmp / "state.sqlite"),
    )
    try:
        server.wait_ready(120)
        master = psutil.Process(server.proc.pid)
        load = Load(port, clients)
        load.start()
        started = time.monotonic()
        end = started + minutes * 60
        next_reload = started + reload_every
        reloads: list[str] = []
        samples: list[dict] = []
        generation_samples: list[dict] = []  # one per generation, 60 s after it started
        generation_start = started
        sampled_this_generation = False
        while time.monotonic() < end:
            time.sleep(1.0)
            now = time.monotonic()
            if not sampled_this_generation and now - generation_start >= min(60, reload_every / 2):
                generation_samples.append(sample(master))
                sampled_this_generation = True
            if len(samples) < (now - started) // 60 + 1:
                samples.append(sample(master))
                log.info(
                    "%.0f s: %d requests, statuses %s, failures %d, workers %s MB",
                    now - started,
                    sum(load.statuses.values()),
                    dict(load.statuses),
                    sum(load.failures.values()),
                    list(samples[-1]["workers"].values()),
                )
            if now >= next_reload and now + 30 < end:
                reloads.append(reload(pidfile, timeout_s=300)[1])  # what `make reload` prints
                log.info("reload: %s", reloads[-1])
                next_reload += reload_every
                generation_start = time.monotonic()
                sampled_this_generation = False
        load.join()
        time.sleep(2)
        last = sample(master)
    finally:
        code = server.stop()
    first_gen, last_gen = generation_samples[0], generation_samples[-1]
    rss_first = sorted(first_gen["workers"].values())
    rss_last = sorted(last_gen["workers"].values())
    growth = max(b / a - 1 for a, b in zip(rss_first, rss_last, strict=False))
    result = {
        "minutes": minutes,
        "clients": clients,
        "requests": sum(load.statuses.values()),
        "statuses": dict(sorted(load.statuses.items())),
        "server_errors": sum(n for s, n in load.statuses.items() if s >= 500),
        "failed_connections": dict(load.failures),
        "stale_keepalive_retries": load.stale_retries,
        "reloads": reloads,
        "worker_rss_mb_first_generation": rss_first,
        "worker_rss_mb_last_generation": rss_last,
        "worker_rss_growth": round(growth, 4),
        "master_fds": [samples[0]["master_fds"], last["master_fds"]],
        "worker_fds": [
            sorted(first_gen["worker_fds"].values()),
            sorted(last_gen["worker_fds"].values()),
        ],
        "master_rss_mb": [samples[0]["master_mb"], last["master_mb"]],
        "exit_code": code,
        "samples": samples,
    }
    result["promises_kept"] = {
        "no 5xx": result["server_errors"] == 0,
        "no failed connection": not load.failures,
        "every reload reported reloaded": bool(reloads)
        and all(r.startswith("reloaded: ") for r in reloads),
        "worker RSS within 10%": abs(growth) <= 0.10,
        "descriptors flat": last["master_fds"] <= samples[0]["master_fds"]
        and max(last_gen["worker_fds"].values()) <= max(first_gen["worker_fds"].values()),
        "clean exit": code == 0,
    }
    return result


def write(result: dict) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    kept = result["promises_kept"]
    broken = [promise for promise, ok in kept.items() if not ok]
    verdict = "broken: " + ", ".join(broken) if broken else "all promises kept"
    statuses = ", ".join(f"{s}: {n:,}" for s, n in result["statuses"].items())
    text = (
        f"{result['minutes']:g} min, {result['clients']} keep-alive clients, "
        f"{len(result['reloads'])} reloads, {result['requests']:,} requests ({statuses}); "
        f"5xx: {result['server_errors']}, failed connections: "
        f"{sum(result['failed_connections'].values())} (keep-alive connections closed by a "
        f"draining worker and sent again: {result['stale_keepalive_retries']}); worker RSS "
        f"{result['worker_rss_mb_first_generation']} MB (first generation) -> "
        f"{result['worker_rss_mb_last_generation']} MB (last), "
        f"{result['worker_rss_growth']:+.1%}; master descriptors "
        f"{result['master_fds'][0]} -> {result['master_fds'][1]}, worker descriptors "
        f"{result['worker_fds'][0]} -> {result['worker_fds'][1]}; "
        f"{verdict}"
        f" ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)."
    )
    fill_readme("soak", text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--reload-every", type=float, default=120.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = soak(args.minutes, args.reload_every, args.clients)
    log.info("%s", write(result))
    return 0 if all(result["promises_kept"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
