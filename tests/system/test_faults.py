"""System: the service under faults, with real processes.

SIGTERM to the gunicorn master and SIGKILL of one worker under load, the S3 remote going away in
the middle of a model download, a full disk under a pipeline stage and under the deploy host's
DVC cache, and two deploys filling one cache at once. Every test is bounded in time and in
requests, asserts its figures and logs them (and records them as properties of the test).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import PENGUIN, ROOT, dvc, venv_env
from tests.servers import SERVER, Server, free_port, http, json_lines

pytestmark = pytest.mark.system

log = logging.getLogger("lockserve.tests.faults")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def figures(record_property, test: str, **values: object) -> None:
    """Log the measured figures and record them as properties of the test."""
    log.info("%s: %s", test, ", ".join(f"{k}={v}" for k, v in values.items()))
    for key, value in values.items():
        record_property(key, value)


def refusal(code: int | None, output: str) -> str:
    """The one CRITICAL line of a server that refused to start: exit 3, never listening, no
    traceback anywhere in its output."""
    assert code == 3, output
    assert "Listening at" not in output
    assert "Traceback" not in output, output
    fatal = [line for line in json_lines(output) if line["level"] == "CRITICAL"]
    assert len(fatal) == 1, output
    assert fatal[0]["msg"].startswith("refusing to start: "), output
    assert "\n" not in fatal[0]["msg"]
    return fatal[0]["msg"]


def start_outcome(server: Server, timeout: float) -> int | None:
    """Wait until the server answers /health/ready (None) or has exited (its exit code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            return code
        with contextlib.suppress(OSError):
            if http("GET", server.base + "/health/ready", timeout=2)[0] == 200:
                return None
        time.sleep(0.1)
    raise AssertionError(f"neither ready nor exited in {timeout}s:\n{server.output()}")


# --- load: keep-alive clients on raw sockets ---------------------------------------------------


@dataclass
class Outcome:
    """One request: when its bytes were all written (``sent``, monotonic; None if the write or
    the connect failed), and its answer's status or the error that ended it."""

    client: int
    sent: float | None
    done: float
    status: int | None = None
    error: str | None = None  # refused | reset | closed | timeout | <other OSError>
    connected: float | None = None  # when its connection was opened
    nth: int = 0  # its place on that connection (1: the first request)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 response (Content-Length framed); ConnectionError if it is cut."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed before the headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed in the middle of the body")
        body += chunk
    return status, headers, body


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionAbortedError):
        return "closed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


class Load:
    """``clients`` threads, each on one keep-alive connection, sending ``POST /predict`` (one
    instance) back to back until ``max_requests`` in all, ``seconds``, or ``stop()``.

    A client whose connection ends opens a new one for its next request; one whose connect is
    refused stops (the server is going away). Every request is an Outcome.
    """

    def __init__(self, port: int, clients: int = 100, max_requests: int = 20_000, seconds=10.0):
        body = json.dumps({"instances": [PENGUIN]}).encode()
        self.request = (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.port, self.clients, self.max_requests = port, clients, max_requests
        self.deadline = time.monotonic() + seconds
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._issued = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _budget(self) -> bool:
        with self._lock:
            if self._issued >= self.max_requests:
                return False
            self._issued += 1
            return True

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _client(self, i: int) -> None:
        sock: socket.socket | None = None
        connected, nth = None, 0
        while not self._stop.is_set() and time.monotonic() < self.deadline and self._budget():
            sent = None
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
                    connected, nth = time.monotonic(), 0
                nth += 1
                sock.sendall(self.request)
                sent = time.monotonic()
                status, headers, body = read_response(sock)
                if status == 200 and not json.loads(body).get("predictions"):
                    status = -1  # a 200 without its predictions is no answer
            except (OSError, ValueError) as exc:  # ValueError: not HTTP, not JSON
                self._record(
                    Outcome(
                        i,
                        sent,
                        time.monotonic(),
                        error=error_kind(exc),
                        connected=connected,
                        nth=nth,
                    )
                )
                if sock is not None:
                    sock.close()
                    sock = None
                if isinstance(exc, ConnectionRefusedError):
                    return
                continue
            self._record(
                Outcome(i, sent, time.monotonic(), status=status, connected=connected, nth=nth)
            )
            if headers.get("connection", "").lower() == "close":
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 30) -> list[Outcome]:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load clients still running"
        return list(self.outcomes)

    def answered(self) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.status == 200)

    def steady(self, answers: int) -> bool:
        """At least ``answers`` answers, and every client has had one: the server has accepted
        every connection (none waits in the listen backlog)."""
        with self._lock:
            done = [o.client for o in self.outcomes if o.status == 200]
        return len(done) >= answers and len(set(done)) == self.clients


def wait_for(predicate, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout}s")


def workers(master: int) -> set[int]:
    """The pids of the gunicorn master's workers."""
    try:
        return {child.pid for child in psutil.Process(master).children()}
    except psutil.NoSuchProcess:
        return set()


def established(pid: int, port: int) -> int:
    """How many client connections to ``port`` process ``pid`` holds open."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def serving(model_repo: Path, log_path: Path, **env: str) -> Server:
    server = Server(SERVER, ROOT, free_port(), log_path, LOCKSERVE_REPO=str(model_repo), **env)
    server.wait_ready()
    return server


@pytest.mark.parametrize("moment", ["steady", "connecting"])
def test_sigterm_under_load_answers_every_request_sent_before_it(
    model_repo, tmp_path, record_property, moment
):
    """The signal comes in steady state, every client's connection accepted by a worker (each
    has had an answer on it), or while clients are still connecting (connections queued in the
    kernel, not yet accepted by any worker). A request counts as sent (and accepted) before the
    signal when its bytes were all written (sendall returned) on such a connection before the
    stamp taken just before os.kill. Each of those must get a whole 200 answer; none may see a
    reset. Requests sent after it may be answered, refused at connect, or find their connection
    closed: they are counted, not lost."""
    graceful = 10
    server = serving(
        model_repo,
        tmp_path / "log",
        WEB_CONCURRENCY="2",
        GRACEFUL_TIMEOUT=str(graceful),
    )
    try:
        load = Load(server.port, clients=100, max_requests=20_000, seconds=20)
        if moment == "steady":
            wait_for(lambda: load.steady(2000), 15, "2,000 answers, one on every connection")
        else:
            wait_for(lambda: load.answered() >= 50, 15, "the first 50 answers")
        signalled = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        code = server.proc.wait(graceful + 5)
        exited = time.monotonic() - signalled
        outcomes = load.join()
    finally:
        server.stop()
    before, after = [], []
    for o in outcomes:
        (before if o.sent is not None and o.sent < signalled else after).append(o)
    lost = [o for o in before if o.status != 200]
    unsent = [o for o in after if o.done < signalled]  # a connect or a write failed before it
    after_kinds = Counter(o.error or str(o.status) for o in after)
    figures(
        record_property,
        f"sigterm-{moment}",
        requests=len(outcomes),
        sent_before=len(before),
        answered_before=len(before) - len(lost),
        lost=len(lost),
        after=len(after),
        after_answered=after_kinds.get("200", 0),
        after_refused=after_kinds.get("refused", 0),
        after_closed_or_reset=after_kinds.get("closed", 0) + after_kinds.get("reset", 0),
        exit_code=code,
        exit_s=round(exited, 2),
    )
    assert len(before) >= (2000 if moment == "steady" else 50)
    assert not lost, f"{len(lost)} requests sent before SIGTERM (at {signalled}) lost: {lost}"
    assert not unsent, unsent
    assert code == 0, server.output()
    assert exited < graceful
    assert set(after_kinds) <= {"200", "refused", "closed", "reset"}, after_kinds


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(
    model_repo, tmp_path, record_property
):
    """SIGKILL one of two workers under load: the requests that fail are at most one for each
    connection the killed worker held; every request sent once its replacement is up is
    answered."""
    clients = 100
    server = serving(model_repo, tmp_path / "log", WEB_CONCURRENCY="2")
    try:
        load = Load(server.port, clients=clients, max_requests=20_000, seconds=30)
        wait_for(lambda: load.steady(1000), 15, "1,000 answers, one on every connection")
        original = workers(server.proc.pid)
        assert len(original) == 2
        victim = min(original)
        held = established(victim, server.port)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        new = wait_for(lambda: workers(server.proc.pid) - original, 20, "a new worker")
        (replacement,) = new
        wait_for(
            lambda: f"worker {replacement} ready" in server.output(), 20, "the new worker ready"
        )
        assert http("GET", server.base + "/health/ready")[0] == 200
        replaced = time.monotonic()
        answered_then = load.answered()
        wait_for(lambda: load.answered() >= answered_then + 1000, 15, "1,000 answers after")
        load.stop()
        outcomes = load.join()
        survivors = workers(server.proc.pid)
    finally:
        server.stop()
    failed = [o for o in outcomes if o.status != 200]
    per_client = Counter(o.client for o in failed)
    after = [o for o in outcomes if o.sent is not None and o.sent >= replaced]
    figures(
        record_property,
        "worker kill",
        requests=len(outcomes),
        answered=len(outcomes) - len(failed),
        failed=len(failed),
        failed_kinds=dict(Counter(o.error or str(o.status) for o in failed)),
        connections_on_killed_worker=held,
        replaced_after_s=round(replaced - killed, 2),
        after_replacement=len(after),
    )
    assert survivors == (original - {victim}) | {replacement}
    assert len(failed) <= held <= clients, failed[:5]
    assert max(per_client.values(), default=0) <= 1
    assert all(killed <= o.done <= replaced for o in failed), failed[:5]
    assert len(after) >= 1000 and all(o.status == 200 for o in after)


# --- the DVC cache -----------------------------------------------------------------------------


def cache_files(repo: Path) -> dict[str, str]:
    """Every file under the repo's DVC cache (.dvc/cache/files/md5), by the name DVC files it
    under (directory + file name), with the md5 of its bytes."""
    root = repo / ".dvc" / "cache" / "files" / "md5"
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)).replace(os.sep, ""): md5(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_cache_sound(repo: Path) -> dict[str, str]:
    """Every file in the cache is a whole object: its bytes have the md5 of its name (a partial
    download, a leftover temp file or a wrong object fails)."""
    files = cache_files(repo)
    wrong = {name: got for name, got in files.items() if name != got}
    assert not wrong, f"cache files whose bytes do not match their name: {wrong}"
    return files


# --- a TCP proxy that can slow down, cut and refuse --------------------------------------------


class Proxy:
    """A TCP proxy from a free loopback port to ``target_port``.

    Towards the client it relays at most ``rate`` bytes a second. With ``cut_after``, the moment
    one connection has relayed that many bytes towards its client, the proxy goes down: every
    connection is reset and new ones are refused, until ``up()``.
    """

    CHUNK = 8192

    def __init__(self, target_port: int, rate: float | None = None, cut_after: int | None = None):
        self.target_port, self.rate, self.cut_after = target_port, rate, cut_after
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cut = threading.Event()  # set once a cut happened
        self.cut_at_bytes = 0
        self.connections = 0
        self._down = threading.Event()
        self._accepting: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        if self._accepting is not None:  # after a cut: its listener closes as its thread ends
            self._accepting.join(5)
        self._down.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._down.set()
        if self._accepting is not None:
            self._accepting.join(5)

    def _accept(self, listener: socket.socket) -> None:
        relays = []
        try:
            while not self._down.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                relay = threading.Thread(target=self._relay, args=(client,), daemon=True)
                relay.start()
                relays.append(relay)
        finally:
            listener.close()
            for relay in relays:
                relay.join(5)

    def _relay(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            reset(client)
            return
        relayed = 0
        try:
            while not self._down.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in ready:
                    data = sock.recv(self.CHUNK)
                    if not data:
                        return
                    if sock is client:
                        upstream.sendall(data)
                        continue
                    client.sendall(data)
                    relayed += len(data)
                    if self.cut_after is not None and relayed >= self.cut_after:
                        self.cut_at_bytes = relayed
                        self.cut.set()
                        self._down.set()
                        return
                    if self.rate:
                        time.sleep(len(data) / self.rate)
        except OSError:
            return
        finally:
            if self._down.is_set():
                reset(client)
                reset(upstream)
            else:
                client.close()
                upstream.close()


@pytest.fixture()
def proxies():
    """Make Proxy objects; every one is brought down at the end of the test."""
    made: list[Proxy] = []

    def make(*args, **kwargs) -> Proxy:
        made.append(Proxy(*args, **kwargs))
        return made[-1]

    yield make
    for proxy in made:
        proxy.down()


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashed peer or a dropped link would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- a model repo on S3, deploy hosts ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_template(tmp_path_factory, model_repo_template, s3) -> Path:
    """The template model repo (v1, then v2 at HEAD; its local remote still holds both) with a
    remote ``s3`` under a prefix of its own in the SeaweedFS bucket, both versions pushed."""
    repo = tmp_path_factory.mktemp("s3-repo") / "repo"
    shutil.copytree(model_repo_template / "repo", repo, symlinks=True)
    url = f"s3://{s3.bucket}/faults-{secrets.token_hex(4)}"
    dvc("remote", "add", "--local", "s3", url, cwd=repo)  # for every rev: not committed
    subprocess.run(
        [sys.executable, "-m", "dvc", "push", "-q", "-r", "s3", "--all-tags"],
        cwd=repo,
        env=venv_env(**s3.env()),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return repo


def deploy_host(template: Path, where: Path) -> Path:
    """A copy of the repo as a deploy host holds it: no model in the work tree, empty cache."""
    repo = where / "repo"
    shutil.copytree(template, repo, symlinks=True)
    (repo / "models" / "model.zip").unlink(missing_ok=True)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)
    return repo


def s3_env(s3, endpoint: str, **over: str) -> dict[str, str]:
    return {
        **s3.env(),
        "AWS_ENDPOINT_URL": endpoint,
        "LOCKSERVE_REMOTE": "s3",
        "WEB_CONCURRENCY": "1",
        **over,
    }


def s3_port(s3) -> int:
    return int(s3.endpoint.rsplit(":", 1)[1])


def test_s3_outage_mid_download_never_leaves_a_partial_object(
    s3_template, artifacts, s3, proxies, tmp_path, record_property
):
    """The proxy between the host and S3 drops every connection once a third of the model
    has gone through, and refuses new ones until the first start has ended."""
    pinned, size = md5(artifacts["v1"]), len(artifacts["v1"])  # v1: 100 trees, the larger
    host = deploy_host(s3_template, tmp_path)
    proxy = proxies(s3_port(s3), rate=256 * 1024, cut_after=size // 3)
    env = s3_env(
        s3,
        proxy.endpoint,
        LOCKSERVE_REV="v1",
        AWS_MAX_ATTEMPTS="2",
        LOCKSERVE_FETCH_ATTEMPTS="3",
        LOCKSERVE_FETCH_BACKOFF_S="0.2",
    )
    first = Server(
        SERVER, ROOT, free_port(), tmp_path / "first.log", LOCKSERVE_REPO=str(host), **env
    )
    started = time.monotonic()
    try:
        code = start_outcome(first, 90)
        first_s = time.monotonic() - started
    finally:
        first.stop()
    output = first.output()
    assert proxy.cut.is_set(), f"the outage never landed mid-download:\n{output}"
    cache_after_outage = assert_cache_sound(host)
    message = None
    if code is not None:  # it refused: cleanly, naming the remote
        message = refusal(code, output)
        assert "remote 's3'" in message and pinned in message
    proxy.up()
    proxy.cut_after = None
    second = Server(
        SERVER, ROOT, free_port(), tmp_path / "second.log", LOCKSERVE_REPO=str(host), **env
    )
    started = time.monotonic()
    try:
        second.wait_ready(90)
        second_s = time.monotonic() - started
        described = http("GET", second.base + "/model")[1]
        status, body = http("POST", second.base + "/predict", {"instances": [PENGUIN]})
    finally:
        second.stop()
    figures(
        record_property,
        "s3 outage",
        artifact_bytes=size,
        cut_at_bytes=proxy.cut_at_bytes,
        first_exit=code,
        first_s=round(first_s, 2),
        first_message=message,
        cache_after_outage=sorted(cache_after_outage),
        second_ready_s=round(second_s, 2),
    )
    assert described["md5"] == pinned and described["source"] == "remote"
    assert status == 200 and body["model"]["md5"] == pinned
    assert assert_cache_sound(host) == {pinned: pinned}


# --- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``, unmounted afterwards (skip if not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mount failed: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(mount: Path, leave: int) -> int:
    """Fill the file system at ``mount`` until at most ``leave`` bytes are free; return them."""
    stats = os.statvfs(mount)
    free = stats.f_bavail * stats.f_frsize
    if free > leave:
        (mount / "filler").write_bytes(b"\0" * (free - leave))
    stats = os.statvfs(mount)
    return stats.f_bavail * stats.f_frsize


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture()
def stage_dir(tmp_path, params, tiny_csv) -> Path:
    """A working directory for `python -m src.train`: params.yaml, prepared data, features."""
    from src import featurize, prepare

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    raw = work / "raw.csv"
    raw.write_text(tiny_csv)
    prepare.run(params["prepare"], work / "data" / "prepared", raw)
    featurize.run(params["featurize"], work / "data" / "prepared", work / "data" / "features")
    return work


def test_train_on_a_full_disk_fails_in_one_line_and_keeps_the_previous_model(
    stage_dir, artifacts, record_property
):
    previous = artifacts["v2"]
    with tmpfs(stage_dir / "models", "256k") as models:
        (models / "model.zip").write_bytes(previous)
        free = fill(models, 16 * 1024)
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "src.train"],
            cwd=stage_dir,
            env=venv_env(PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - started
        left = files_under(models)
        kept = (models / "model.zip").read_bytes()
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if " ERROR " in line]
    figures(
        record_property,
        "train on a full disk",
        free_bytes=free,
        exit_code=proc.returncode,
        took_s=round(took, 2),
        error=errors,
        files_left=left,
    )
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert len(errors) == 1, output
    assert "No space left on device" in errors[0] and "models/model.zip" in errors[0]
    assert kept == previous
    assert left == ["filler", "model.zip"]


@pytest.mark.parametrize("remote", ["local", "s3"])
def test_a_full_cache_disk_refuses_to_start_and_keeps_no_partial_object(
    remote, s3_template, artifacts, s3, tmp_path, record_property
):
    """The host's .dvc/cache is a tmpfs smaller than the pinned model; the remote is on
    another disk (a directory) or S3."""
    pinned, size = md5(artifacts["v1"]), len(artifacts["v1"])
    host = deploy_host(s3_template, tmp_path)
    env = {"LOCKSERVE_REV": "v1", "WEB_CONCURRENCY": "1"}
    if remote == "s3":
        env.update(s3_env(s3, s3.endpoint, LOCKSERVE_REV="v1"))
    with tmpfs(host / ".dvc" / "cache", f"{size // 2 // 4096 * 4}k") as cache:
        server = Server(
            SERVER, ROOT, free_port(), tmp_path / "log", LOCKSERVE_REPO=str(host), **env
        )
        started = time.monotonic()
        try:
            code = server.proc.wait(90)
        finally:
            server.stop()
        took = time.monotonic() - started
        left = files_under(cache)
    message = refusal(code, server.output())
    figures(
        record_property,
        f"full cache disk ({remote})",
        artifact_bytes=size,
        exit_code=code,
        took_s=round(took, 2),
        message=message,
        files_left=left,
    )
    assert left == [], f"the cache kept {left}"
    assert pinned in message and f"remote '{remote}'" in message
    assert "No space left on device" in message


# --- two deploys at once -----------------------------------------------------------------------


def test_two_deploys_at_once_share_one_cache(
    s3_template, artifacts, s3, proxies, tmp_path, record_property
):
    """Two servers on one repo with an empty cache, started at the same moment; both need the
    pinned model from S3, through a slow link (a download takes about five seconds, longer than
    DVC waits for its repo lock). One downloads it while the other waits, then finds it in the
    cache: both serve it, and the cache holds it whole, once."""
    pinned, size = md5(artifacts["v1"]), len(artifacts["v1"])
    host = deploy_host(s3_template, tmp_path)
    proxy = proxies(s3_port(s3), rate=32 * 1024)
    env = s3_env(s3, proxy.endpoint, LOCKSERVE_REV="v1")
    servers = [
        Server(SERVER, ROOT, free_port(), tmp_path / f"{i}.log", LOCKSERVE_REPO=str(host), **env)
        for i in (1, 2)
    ]
    started = time.monotonic()
    try:
        codes = [start_outcome(server, 90) for server in servers]
        ready_s = time.monotonic() - started
        outputs = [server.output() for server in servers]
        assert codes == [None, None], "\n".join(outputs)
        described = [http("GET", server.base + "/model")[1] for server in servers]
        predicted = [
            http("POST", server.base + "/predict", {"instances": [PENGUIN]}) for server in servers
        ]
    finally:
        for server in servers:
            server.stop()
    sources = [d["source"] for d in described]
    figures(
        record_property,
        "two deploys",
        artifact_bytes=size,
        ready_s=round(ready_s, 2),
        sources=sources,
        proxy_connections=proxy.connections,
    )
    assert [d["md5"] for d in described] == [pinned, pinned]
    assert sorted(sources) == ["cache", "remote"]
    assert sum("waiting for it" in output for output in outputs) == 1
    assert all(status == 200 and body["model"]["md5"] == pinned for status, body in predicted)
    assert assert_cache_sound(host) == {pinned: pinned}
