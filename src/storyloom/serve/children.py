"""`Children`: the one supervisor of every child process `serve` keeps (workers, API processes).

A child is a fresh interpreter started from a `ChildSpec` (argv, environment, inherited file
descriptors, niceness, and optionally a line it prints once it is ready). `Children` spawns them,
restarts one that died with exponential backoff (a child that lived over a minute counts as healthy
again), retires one on request (it is sent SIGTERM and not restarted), and stops them all: SIGTERM,
a grace period for their own drain, then SIGKILL. What the children are for (scaling workers on the
backlog, API processes on shared sockets) is the callers' business (`supervisor.py`,
`api_processes.py`); how children live and die is only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from storyloom.jobs.metrics import forget_process_metrics
from storyloom.logs import get_logger

__all__ = ["Child", "ChildSpec", "Children", "renice", "restart_delay", "stop_processes"]

_log = get_logger("storyloom.serve.children")
_HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """How to start one child. `ready_line`: the stdout line that says it accepts work (None: ready
    once spawned, and its stdout is not read)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    pass_fds: Sequence[int] = ()
    nice: int = 0  # added to this process's niceness after the spawn
    ready_line: str | None = None


@dataclass(slots=True)
class Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    retiring: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def renice(pid: int, increment: int) -> None:
    """Give `pid` this process's niceness plus `increment` (set from here: `preexec_fn` is unsafe in
    a process with threads). Where priorities do not exist, nothing."""
    if not hasattr(os, "setpriority"):  # pragma: no cover - Windows
        return
    with contextlib.suppress(OSError):  # the child already gone: its restart is reniced again
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)
        os.setpriority(os.PRIO_PROCESS, pid, target)


def restart_delay(failures: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff for a child that keeps dying: base, 2×base, 4×base… up to cap."""
    return min(cap_s, base_s * 2.0 ** max(0, failures - 1))


async def stop_processes(procs: Sequence[asyncio.subprocess.Process], grace_s: float) -> None:
    """SIGTERM those still running, wait up to `grace_s` for them to exit, kill the rest."""
    alive = [p for p in procs if p.returncode is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    if not alive:
        return
    await asyncio.wait([asyncio.create_task(p.wait()) for p in alive], timeout=grace_s)
    for proc in alive:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Children:
    """A set of supervised children; `check()` (called periodically by the owner) restarts the dead."""

    def __init__(
        self,
        *,
        kind: str,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stop_grace_s: float = 20.0,
        on_death: Callable[[Child], Awaitable[None]] | None = None,
    ) -> None:
        self.kind = kind  # "worker", "api_process": the logs' word for them
        self.on_death = on_death  # called once per unexpected exit, before the restart
        self.children: list[Child] = []
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stop_grace_s = stop_grace_s
        self.restarts = 0

    @property
    def alive(self) -> list[Child]:
        return [c for c in self.children if c.alive]

    async def add(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children.append(child)
        await self.spawn(child)
        return child

    async def spawn(self, child: Child) -> None:
        spec = child.spec
        child.ready = asyncio.Event()
        child.retiring = False
        child.proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if spec.ready_line is not None else None,
            pass_fds=tuple(spec.pass_fds),
        )
        if spec.nice:
            renice(child.proc.pid, spec.nice)
        child.started_at = time.monotonic()
        if spec.ready_line is None:
            child.ready.set()
        else:
            child.reader = asyncio.create_task(self._read_stdout(child, child.proc))
        _log.info(f"{self.kind}_spawned", **{self.kind: spec.name}, pid=child.proc.pid)

    async def _read_stdout(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():  # also drains it: a full pipe would block the child
            if line.decode(errors="replace").strip() == child.spec.ready_line:
                child.ready.set()

    async def wait_ready(self, child: Child, timeout_s: float) -> bool:
        """Whether `child` printed its ready line before dying or `timeout_s` passing."""
        if child.proc is None:
            return False
        ready = asyncio.create_task(child.ready.wait())
        died = asyncio.create_task(child.proc.wait())
        await asyncio.wait({ready, died}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        died.cancel()
        return child.ready.is_set()

    def retire(self, child: Child) -> None:
        """Ask `child` to stop for good (SIGTERM); `check` then forgets it instead of restarting it."""
        child.retiring = True
        if child.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)

    def signal_all(self, sig: int = signal.SIGTERM) -> None:
        for child in self.alive:
            with contextlib.suppress(ProcessLookupError):
                assert child.proc is not None
                child.proc.send_signal(sig)

    async def check(self) -> None:
        """Restart children that died (with backoff), forget retired ones that have exited."""
        now = time.monotonic()
        for child in list(self.children):
            proc = child.proc
            if proc is None:
                if now >= child.restart_at:
                    await self.spawn(child)
                continue
            if proc.returncode is None:
                continue
            forget_process_metrics(proc.pid)
            if child.retiring:
                self.children.remove(child)
                continue
            child.failures = 0 if now - child.started_at > _HEALTHY_AFTER_S else child.failures + 1
            delay = restart_delay(child.failures, self.backoff_s, self.backoff_max_s)
            _log.warning(
                f"{self.kind}_died", **{self.kind: child.spec.name}, code=proc.returncode, restart_in_s=delay
            )
            child.proc = None
            child.restart_at = now + delay
            self.restarts += 1
            if self.on_death is not None:
                try:
                    await self.on_death(child)
                except Exception as exc:  # the lease timeout still brings its work back
                    _log.warning(f"{self.kind}_death_hook_failed", error=str(exc))

    async def stop(self) -> None:
        """SIGTERM every child, wait for their drain (up to `stop_grace_s`), kill the rest."""
        await stop_processes([c.proc for c in self.children if c.proc is not None], self.stop_grace_s)
        for child in self.children:
            if child.reader is not None:
                child.reader.cancel()
        self.children.clear()
