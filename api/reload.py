"""Zero-downtime reload, reported: ``python -m api.reload`` (``make reload``).

The server's master writes what it serves to a state file beside its pidfile when it starts
and after every reload (api/serve.py; api/gunicorn_conf.py under gunicorn): a sequence
number, ``reloaded`` with each variant's md5 and rev, or ``refused`` with the reason (the
previous models go on serving).
The command sends the master SIGHUP, waits for the next entry and prints it: exit 0 when the
new models serve, 1 when the reload was refused, 2 when there is no server or no answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lockserve.reload")

PIDFILE = ".lockserve/server.pid"


def state_path(pidfile: str | Path) -> Path:
    """Where the master at ``pidfile`` writes its state."""
    return Path(f"{pidfile}.state.json")


def write_state(path: Path, status: str, pid: int, **fields: Any) -> None:
    """Record the master's state with the next sequence number (written whole, then renamed)."""
    seq = int((read_state(path) or {}).get("seq", 0)) + 1
    doc = {"seq": seq, "pid": pid, "status": status, "at": time.time(), **fields}
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(doc, sort_keys=True) + "\n")
    partial.replace(path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The master's last state, or None when there is none (or it cannot be read)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def served(app: Any) -> dict[str, dict[str, str]]:
    """variant -> md5 and rev of the models an app serves, and ``lookup <path>`` -> those of
    its table of precomputed answers, if it has one."""
    store = app.state.store
    out = {
        name: {"md5": store.get(name).md5, "rev": store.get(name).resolved.rev}
        for name in store.variants()
    }
    table = getattr(app.state, "lookup", None)
    if table is not None:
        out[f"lookup {table.resolved.path}"] = {
            "md5": table.resolved.md5,
            "rev": table.resolved.rev,
        }
    return out


def describe(state: dict[str, Any]) -> str:
    """One line for a state: 'reloaded: name md5 (rev), ...' or 'refused: reason'."""
    if state.get("status") == "refused":
        return f"refused: {state.get('reason', 'no reason recorded')}"
    variants = state.get("variants") or {}
    listed = ", ".join(f"{n} {v.get('md5')} ({v.get('rev')})" for n, v in variants.items())
    return f"{state.get('status')}: {listed}"


def reload(pidfile: Path, timeout_s: float) -> tuple[int, str]:
    """Send the master SIGHUP and wait for its next state: (exit code, line to print)."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return 2, f"no lockserve server: no running master in pidfile {pidfile}"
    path = state_path(pidfile)
    before = (read_state(path) or {}).get("seq", 0)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(path)
        if state is not None and state.get("seq", 0) > before and state.get("pid") == pid:
            return (0 if state.get("status") == "reloaded" else 1), describe(state)
        time.sleep(0.1)
    return 2, f"no answer from master {pid} within {timeout_s:g} s; see the server's log"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.reload", description=__doc__)
    parser.add_argument(
        "--pidfile", type=Path, default=Path(os.environ.get("LOCKSERVE_PIDFILE", PIDFILE))
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    code, line = reload(args.pidfile, args.timeout)
    (log.info if code == 0 else log.error)(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
