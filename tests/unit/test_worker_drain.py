"""Unit: on shutdown a worker accepts what the kernel has queued before it closes its
listener (api/worker.py), since closing the last listener resets every queued connection."""

import asyncio
import socket
import threading
import time

from api import worker


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def test_queued_counts_connections_no_one_has_accepted():
    sock = listener()
    clients = [socket.create_connection(sock.getsockname()) for _ in range(3)]
    time.sleep(0.05)
    assert worker.queued(sock) == 3
    sock.accept()[0].close()
    assert worker.queued(sock) == 2
    for c in clients:
        c.close()
    sock.close()


def test_a_socket_that_is_not_tcp_has_nothing_queued():
    a, b = socket.socketpair()
    assert worker.queued(a) == 0
    a.close()
    b.close()


def test_shutdown_waits_until_the_queue_is_empty(monkeypatch):
    monkeypatch.setattr(worker, "ACCEPT_S", 0.05)
    sock = listener()
    clients = [socket.create_connection(sock.getsockname()) for _ in range(2)]
    time.sleep(0.05)

    def accept_later():
        time.sleep(0.4)
        for _ in clients:
            sock.accept()[0].close()

    thread = threading.Thread(target=accept_later)
    thread.start()
    started = time.monotonic()
    asyncio.run(worker.accept_what_is_queued([sock]))
    waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.35 and worker.queued(sock) == 0
    for c in clients:
        c.close()
    sock.close()


def test_shutdown_gives_up_after_the_longest_wait(monkeypatch):
    monkeypatch.setattr(worker, "ACCEPT_S", 0.01)
    monkeypatch.setattr(worker, "ACCEPT_MAX_S", 0.2)
    sock = listener()
    client = socket.create_connection(sock.getsockname())
    time.sleep(0.05)
    started = time.monotonic()
    asyncio.run(worker.accept_what_is_queued([sock]))
    assert 0.15 <= time.monotonic() - started < 2 and worker.queued(sock) == 1
    client.close()
    sock.close()


def test_a_listener_the_parent_holds_is_a_reload_one_it_closed_is_a_shutdown():
    """A worker asks whether its parent (the gunicorn master) still holds the listener: a
    child process asks about a socket this process holds, then after this process closed it."""
    import subprocess
    import sys

    ask = (
        "import socket, sys; from api.worker import held_by_parent; "
        "s = socket.socket(fileno=int(sys.argv[1])); sys.stdin.readline(); "
        "print(held_by_parent([s]))"
    )

    def child_says(parent_keeps: bool) -> str:
        sock = listener()
        fd = sock.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-c", ask, str(fd)],
            pass_fds=[fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if not parent_keeps:
            sock.close()  # as the master does on shutdown, before it signals the workers
        answer = proc.communicate("go\n", timeout=30)[0].strip()
        sock.close()
        return answer

    assert child_says(parent_keeps=True) == "True"
    assert child_says(parent_keeps=False) == "False"
