"""The API's uvicorn server: listening sockets (one per API process), start-up, and shutdown.

Several API processes share one port through SO_REUSEPORT: each has a listening socket of its own
bound to the same address, and the kernel spreads new connections over them by a hash of the
connection's addresses. A burst of 500 users opening streams is then parsed and answered on every
core instead of one. The parent process creates every socket and keeps them open, so a restarted
API process takes over its predecessor's socket, and the connections waiting in its backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from storyloom.errors import ConfigError

__all__ = ["ApiServer", "api_server", "listen_sockets", "start_server"]


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process that runs it owns SIGTERM/SIGINT and the
    order of shutdown (uvicorn would re-raise the signal after its exit and kill the workers' drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(app: Any, *, graceful_s: float) -> ApiServer:
    return ApiServer(
        uvicorn.Config(
            app,
            lifespan="on",
            access_log=False,
            log_level="warning",
            ws="none",
            backlog=2048,
            timeout_keep_alive=60,
            timeout_graceful_shutdown=int(graceful_s) or 1,
        )
    )


def listen_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address (port 0: a free one, the same for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("several API processes need SO_REUSEPORT, which this system lacks; use one.")
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    return out


async def start_server(server: ApiServer, sock: socket.socket) -> asyncio.Task[None]:
    """Serve on `sock` in a task; return once the server accepts connections (lifespan done)."""
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    for _ in range(3000):  # uvicorn offers no ready event; start-up takes well under a second
        if server.started or serving.done():
            break
        await asyncio.sleep(0.02)
    if not server.started:
        if serving.done():
            serving.result()
        serving.cancel()
        raise ConfigError("the API server did not start.")
    return serving
