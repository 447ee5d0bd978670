"""The gunicorn worker class: uvicorn on uvloop and httptools, without uvicorn's access log
(the app writes its own JSON access line), and with a shutdown that drains.

On SIGTERM or a reload, uvicorn stops accepting and then closes every connection that has no
request in progress, including one it accepted a moment ago whose request bytes are still in
flight; that client sees a reset. The draining server waits a moment between the two steps, so
such requests arrive and are answered.

The server gets the listening sockets themselves rather than gunicorn's wrappers of them: the
wrappers log closing an already closed descriptor (uvloop closes it with its server) as
"Error while closing socket [Errno 9]", once per worker on every reload and shutdown.
"""

import asyncio
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

DRAIN_S = 0.5


class DrainingServer(Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting; the other workers (or new ones) take over
        await asyncio.sleep(DRAIN_S)
        await super().shutdown(sockets)


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        # the sockets themselves, not gunicorn's wrappers, which log closing a closed one
        await server.serve(sockets=[getattr(s, "sock", s) for s in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
