"""The gunicorn worker class (api/gunicorn_conf.py, the server measured beside api/serve.py):
uvicorn on uvloop and httptools, without uvicorn's access log (the app writes its own JSON
access line) or its proxy-headers layer, and with a shutdown that drains.

On SIGTERM or a reload, uvicorn stops accepting and then closes every connection that has no
request in progress, including one it accepted a moment ago whose request bytes are still in
flight; that client sees a reset. And when the last process holding the listening socket
closes it, the kernel resets every connection still queued for accept. On shutdown (the
master has closed its copy) the draining server goes on accepting until the queue is empty (the
queued connections become answered requests); on a reload the master keeps the listener and
the new workers take the queue. Then it stops accepting and waits a moment more, so requests
already on the wire arrive and are answered, before uvicorn's own shutdown.

The server gets the listening sockets themselves rather than gunicorn's wrappers of them: the
wrappers log closing an already closed descriptor (uvloop closes it with its server) as
"Error while closing socket [Errno 9]", once per worker on every reload and shutdown.
"""

import asyncio
import os
import socket
import sys
import time

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

# the same drain as the production server's master (after the signal, accepting at least
# ACCEPT_S and at most ACCEPT_MAX_S while connections wait, then DRAIN_S more)
from api.serve import ACCEPT_MAX_S, ACCEPT_S, DRAIN_S, queued


def held_by_parent(listeners: list[socket.socket]) -> bool:
    """Whether the gunicorn master still holds these listeners: a reload, after which new
    workers accept from the same queue (on shutdown the master closes them first)."""
    try:
        inodes = {f"socket:[{os.fstat(s.fileno()).st_ino}]" for s in listeners}
        fds = f"/proc/{os.getppid()}/fd"
        return any(os.readlink(os.path.join(fds, fd)) in inodes for fd in os.listdir(fds))
    except OSError:
        return False


async def accept_what_is_queued(listeners: list[socket.socket]) -> None:
    """On shutdown, go on accepting (and answering) until no connection waits in the
    listeners' queues, for at least ACCEPT_S and at most ACCEPT_MAX_S: when the last process
    holding a listener closes it, the kernel resets every connection still queued. On a reload
    the master keeps the listeners and the new workers take the queue: nothing to wait for."""
    if held_by_parent(listeners):
        return
    started = time.monotonic()
    await asyncio.sleep(ACCEPT_S)
    while time.monotonic() - started < ACCEPT_MAX_S and any(queued(s) for s in listeners):
        await asyncio.sleep(0.02)


class DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await accept_what_is_queued(sockets or [])
        for server in self.servers:
            server.close()  # stop accepting; the other workers (or new ones) take over
        await asyncio.sleep(DRAIN_S)
        await super().shutdown(sockets)


class Worker(UvicornWorker):
    # no proxy-headers layer: nothing here reads the client's address
    CONFIG_KWARGS = {
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "proxy_headers": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        # the sockets themselves, not gunicorn's wrappers, which log closing a closed one
        await server.serve(sockets=[getattr(s, "sock", s) for s in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
