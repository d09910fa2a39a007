"""`ApiProcesses`: the extra API processes of `storyloom serve --api-processes N`, kept alive.

Each child is a fresh interpreter (`python -m storyloom.serve.api_child`) serving the same app on its
own SO_REUSEPORT socket of the shared port, kept by `serve/children.py` like the workers. The parent
owns every socket, so a child that dies is restarted (with backoff) on the same listening socket and
the same wake port: the connections queued meanwhile are served, and the workers' wake URLs stay right.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from storyloom.api.services import ApiOptions
from storyloom.errors import ConfigError
from storyloom.logs import get_logger
from storyloom.serve.api_child import READY
from storyloom.serve.api_child import ChildSpec as ApiChildSpec
from storyloom.serve.children import Children, ChildSpec

__all__ = ["ApiProcesses"]

_log = get_logger("storyloom.serve.api_processes")


class ApiProcesses:
    """The N−1 extra API processes, each on its own inherited listening and wake sockets."""

    def __init__(
        self,
        *,
        listen: list[socket.socket],
        wake: list[socket.socket],
        census: Path,
        options: ApiOptions,
        graceful_s: float,
        env: Mapping[str, str],
        check_every_s: float = 0.5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._specs = []
        for i, (lsock, wsock) in enumerate(zip(listen, wake, strict=True)):
            spec = ApiChildSpec.build(
                options,
                index=i + 1,
                listen_fd=lsock.fileno(),
                wake_fd=wsock.fileno(),
                census=census,
                graceful_s=graceful_s,
            )
            argv = [sys.executable, "-m", "storyloom.serve.api_child", spec.model_dump_json()]
            self._specs.append(
                ChildSpec(
                    name=str(spec.index),
                    argv=argv,
                    env=dict(env),
                    pass_fds=(spec.listen_fd, spec.wake_fd),
                    ready_line=READY,
                )
            )
        self._children = Children(
            kind="api_process", backoff_s=backoff_s, backoff_max_s=backoff_max_s, stop_grace_s=graceful_s + 5
        )
        self._check_every_s = check_every_s
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Start every child and wait until each accepts connections."""
        started = [await self._children.add(spec) for spec in self._specs]
        ready = await asyncio.gather(*(self._children.wait_ready(c, timeout_s) for c in started))
        if not all(ready):
            raise ConfigError("an API process did not start (see its error above).")
        self._task = asyncio.create_task(self._monitor(), name="api-processes")

    def terminate(self) -> None:
        """Ask every child to stop (SIGTERM): they end their streams and exit within `graceful_s`."""
        if self._task is not None:
            self._task.cancel()
        self._children.signal_all()

    async def stop(self) -> None:
        self.terminate()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._children.stop()

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._check_every_s)
            try:
                await self._children.check()
            except OSError as exc:  # e.g. no memory to spawn: try again at the next check
                _log.warning("api_process_check_failed", error=str(exc))
