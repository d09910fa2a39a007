"""Run the simulator from Python: in a daemon thread with its own loop, or on the current loop.

    with run_sim_in_thread(SimConfig(seed=1)) as sim:      # sync code, or tests of other loops
        client = HttpModelClient(sim.url, ...)
    async with serve_sim(config) as sim:                   # async code on this loop
        sim.configure(faults={"error_5xx": 1.0})
        sim.stats()["admitted"]

Both are a real uvicorn server on 127.0.0.1 and a port the OS picked (the socket is bound before the
server starts, so there is no race for the port).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import uvicorn

from storyloom.sim.config import SimConfig
from storyloom.sim.server import create_sim_app
from storyloom.sim.state import SimState

__all__ = ["SimHandle", "bind_socket", "run_sim_in_thread", "serve_sim", "uvicorn_config"]

T = TypeVar("T")


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; port 0 lets the OS pick a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, *, loop: str = "auto", log_level: str = "warning") -> uvicorn.Config:
    """Lean settings for many concurrent streams: httptools, no access log, no lifespan, big backlog."""
    return uvicorn.Config(
        app,
        http="httptools",
        loop=loop,
        ws="none",
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=2048,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=3,
    )


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the host program.

    uvicorn's default swaps the main thread's SIGINT/SIGTERM handlers while it serves, so a Ctrl-C
    meant for `storyloom write` would stop only the in-process simulator.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SimHandle:
    """A running simulator: its base URL (ending in /v1), live stats and config."""

    def __init__(
        self, state: SimState, host: str, port: int, call: Callable[[Callable[[], Any]], Any]
    ) -> None:
        self._state = state
        self._call = call  # runs a function on the server's loop thread and returns its result
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.url = f"{self.base_url}/v1"

    def stats(self) -> dict[str, Any]:
        """What GET /stats returns."""
        return dict(self._call(lambda: self._state.snapshot(asyncio.get_running_loop().time())))

    def reset_stats(self) -> None:
        self._call(self._state.reset_stats)

    def configure(self, **patch: Any) -> SimConfig:
        """Deep-merge `patch` into the live config, like POST /sim/config (ConfigError if invalid)."""
        result: SimConfig = self._call(lambda: self._state.configure(patch))
        return result

    @property
    def config(self) -> SimConfig:
        return self._state.config


@contextlib.asynccontextmanager
async def serve_sim(config: SimConfig | None = None, *, host: str = "127.0.0.1") -> AsyncIterator[SimHandle]:
    """The simulator on the current event loop, for as long as the block runs."""
    app = create_sim_app(config)
    sock = bind_socket(host)
    server = _EmbeddedServer(uvicorn_config(app))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise a startup failure
                raise RuntimeError("the simulator stopped before it started")
            await asyncio.sleep(0.005)
        yield SimHandle(app.state.sim, host, sock.getsockname()[1], lambda fn: fn())
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.contextmanager
def run_sim_in_thread(config: SimConfig | None = None, *, host: str = "127.0.0.1") -> Iterator[SimHandle]:
    """The simulator in a daemon thread with its own event loop (uvloop when available)."""
    app = create_sim_app(config)
    sock = bind_socket(host)
    server = _EmbeddedServer(uvicorn_config(app))
    loop = _new_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the starting thread below
            failure.append(exc)
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="storyloom-sim", daemon=True)
    thread.start()
    while not server.started and not ready.is_set():
        ready.wait(0.005)
    if failure or not server.started:
        sock.close()
        raise RuntimeError(f"the simulator failed to start: {failure[0] if failure else 'unknown'}")

    def call(fn: Callable[[], T]) -> T:
        async def invoke() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(invoke(), loop).result(timeout=10)

    try:
        yield SimHandle(app.state.sim, host, sock.getsockname()[1], call)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, just slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
