"""`ApiProcesses`: the extra API processes of `storyloom serve --api-processes N`, kept alive.

Each child is a fresh interpreter (`python -m storyloom.serve.api_child`) serving the same app on its own
SO_REUSEPORT socket of the shared port. The parent owns every socket, so a child that dies is
restarted (with the supervisor's backoff) on the same listening socket and the same wake port: the
connections queued meanwhile are served, and the workers' wake URLs stay right.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from storyloom.api.services import ApiOptions
from storyloom.errors import ConfigError
from storyloom.jobs.metrics import forget_process_metrics
from storyloom.logs import get_logger
from storyloom.serve.api_child import READY, ChildSpec
from storyloom.serve.supervisor import restart_delay, stop_processes

__all__ = ["ApiProcesses"]

_log = get_logger("storyloom.serve.api_processes")


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


class ApiProcesses:
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
        self._children = [
            _Child(
                ChildSpec.build(
                    options,
                    index=i + 1,
                    listen_fd=lsock.fileno(),
                    wake_fd=wsock.fileno(),
                    census=census,
                    graceful_s=graceful_s,
                )
            )
            for i, (lsock, wsock) in enumerate(zip(listen, wake, strict=True))
        ]
        self._env = {**os.environ, **env}
        self._graceful_s = graceful_s
        self._check_every_s = check_every_s
        self._backoff = (backoff_s, backoff_max_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Start every child and wait until each accepts connections."""
        for child in self._children:
            await self._spawn(child)
        waits = [asyncio.create_task(self._ready_or_dead(c)) for c in self._children]
        done, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending or not all(t.result() for t in done):
            raise ConfigError("an API process did not start (see its error above).")
        self._task = asyncio.create_task(self._monitor(), name="api-processes")

    def terminate(self) -> None:
        """Ask every child to stop (SIGTERM): they end their streams and exit within `graceful_s`."""
        if self._task is not None:
            self._task.cancel()
        for child in self._children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        self.terminate()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await stop_processes([c.proc for c in self._children if c.proc is not None], self._graceful_s + 5)
        for child in self._children:
            if child.reader is not None:
                child.reader.cancel()

    async def _spawn(self, child: _Child) -> None:
        spec = child.spec
        child.ready = asyncio.Event()
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "storyloom.serve.api_child",
            spec.model_dump_json(),
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(spec.listen_fd, spec.wake_fd),
        )
        child.started_at = time.monotonic()
        child.reader = asyncio.create_task(self._read_stdout(child, child.proc))
        _log.info("api_process_spawned", api_process=spec.index, pid=child.proc.pid)

    async def _read_stdout(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if line.decode().strip() == READY:
                child.ready.set()

    async def _ready_or_dead(self, child: _Child) -> bool:
        assert child.proc is not None
        ready = asyncio.create_task(child.ready.wait())
        died = asyncio.create_task(child.proc.wait())
        await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        died.cancel()
        return child.ready.is_set()

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._check_every_s)
            try:
                await self._check()
            except OSError as exc:  # e.g. no memory to spawn: try again at the next check
                _log.warning("api_process_check_failed", error=str(exc))

    async def _check(self) -> None:
        now = time.monotonic()
        for child in self._children:
            proc = child.proc
            if proc is None:
                if now >= child.restart_at:
                    await self._spawn(child)
                continue
            if proc.returncode is None:
                continue
            forget_process_metrics(proc.pid)
            child.failures = 0 if now - child.started_at > 60 else child.failures + 1
            delay = restart_delay(child.failures, *self._backoff)
            _log.warning(
                "api_process_died", api_process=child.spec.index, code=proc.returncode, restart_in_s=delay
            )
            child.proc = None
            child.restart_at = now + delay
