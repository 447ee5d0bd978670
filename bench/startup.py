"""Start to ready: the default server with the artifact in the work tree, and a deploy host that
fetches the pinned model from S3 (SeaweedFS on loopback) into an empty cache.

A workstation clone of this repo pushes the model dvc.lock pins to the `s3` remote (from this
checkout's cache); each deploy host is a fresh git clone of it, credentials in its environment
only, started as `make deploy` starts one (api.serve, LOCKSERVE_REV=HEAD, LOCKSERVE_REMOTE=s3).
Seconds are from the start of the process to /health/ready answering 200; the phases come from
the server's own log line (lock, fetch, verify, load).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.servers import SERVER, Server, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PHASES = re.compile(r"lock_ms|fetch_ms|verify_ms|load_ms|resolve_ms")


def _run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=300)


def timed_start(cwd: Path, log: Path, **env: str) -> dict[str, Any]:
    """Start the default server in ``cwd``; seconds to ready and the resolver's phases."""
    started = time.perf_counter()
    server = Server(SERVER, cwd, free_port(), log, **env)
    try:
        server.wait_ready(timeout=120)
        ready_s = time.perf_counter() - started
    finally:
        server.stop()
    phases: dict[str, float] = {}
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"resolve_ms"' in line and '"load_ms"' in line:
            record = json.loads(line)
            phases = {k: v for k, v in record.items() if PHASES.fullmatch(k)}
            break
    return {"ready_s": round(ready_s, 2), **phases}


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time to ready."""
    return sorted(runs, key=lambda r: r["ready_s"])[len(runs) // 2]


def local(repeats: int = 3) -> dict[str, Any]:
    """Start to ready with the artifact in this work tree."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = [timed_start(ROOT, Path(tmp) / f"local{i}.log") for i in range(repeats)]
    return {**median(runs), "runs": [r["ready_s"] for r in runs]}


def deploy_host(repeats: int = 3) -> dict[str, Any]:
    """Start to ready on fresh deploy hosts that fetch the pinned model from S3."""
    from tools import seaweedfs

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        s3 = seaweedfs.start(tmp / "seaweedfs")
        try:
            workstation = tmp / "workstation"
            _run(["git", "clone", "-q", str(ROOT), str(workstation)], tmp)
            dvc = str(BIN / "dvc")
            for key, value in (
                ("endpointurl", s3.endpoint),
                ("access_key_id", s3.access_key),
                ("secret_access_key", s3.secret_key),
            ):
                _run([dvc, "remote", "modify", "--local", "s3", key, value], workstation)
            _run([dvc, "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], workstation)
            _run([dvc, "push", "-q", "-r", "s3", "train"], workstation)
            runs = []
            for i in range(repeats):
                host = tmp / f"host{i}"
                _run(["git", "clone", "-q", str(workstation), str(host)], tmp)
                env = {**s3.env(), "LOCKSERVE_REMOTE": "s3", "LOCKSERVE_REV": "HEAD"}
                runs.append(timed_start(host, tmp / f"host{i}.log", **env))
                shutil.rmtree(host)
        finally:
            seaweedfs.stop(s3)
    return {**median(runs), "runs": [r["ready_s"] for r in runs]}
