"""`bench service --nodes`: the scale-out deployment on one machine, driven like `bench service`.

Two API nodes (`serve --workers 0`, on 127.0.0.2 and 127.0.0.3) and two worker nodes (`worker`),
each a process of its own, share one PostgreSQL and one Redis (started here in a temporary
directory unless URLs are given), with Redis pub/sub carrying the event wake-ups between them
(jobs/hub.py). Each client submits its job to one API node and follows its stream on the other,
so every event crosses machines' worth of plumbing: worker -> Postgres -> Redis wake -> the other
node's hub. Figures: completion, event lag (p50/p99, from an event's creation to its arrival
here), and CPU per model call: CPU seconds of the API and worker nodes (the simulator and the
databases excluded) over the model calls the simulator answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import psutil

from storyloom import eventloop
from storyloom.bench.clients import _Client, _follow, _input, _submit_until_accepted
from storyloom.bench.service import BenchConfig, _percentile
from storyloom.errors import ConfigError
from storyloom.serve.simulator import SimProcess

__all__ = ["NodesConfig", "run_nodes_bench"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodesConfig:
    bench: BenchConfig
    api_nodes: int = 2
    worker_nodes: int = 2
    database_url: str | None = None  # postgresql+asyncpg://…; None: a private cluster
    redis_url: str | None = None  # None: a private redis-server


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ConfigError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s.")


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise ConfigError("bench service --nodes needs redis-server on PATH, or --redis-url.")
    port = _free_port("127.0.0.1")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port("127.0.0.1", port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    found = (
        sorted(p / "bin" for p in base.glob("*") if (p / "bin" / "initdb").exists()) if base.exists() else []
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextlib.contextmanager
def _postgres(workdir: Path) -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        raise ConfigError("bench service --nodes needs PostgreSQL (initdb, pg_ctl), or --database-url.")
    data = workdir / "pg"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        workdir.chmod(0o755)  # its user must reach the data directory
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port("127.0.0.1")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, **quiet)  # type: ignore[call-overload]  # fmt: skip
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c max_connections=300 -c synchronous_commit=off"
    )
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l",
                    str(data / "log"), "start"], check=True, **quiet)  # type: ignore[call-overload]  # fmt: skip
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       check=False, **quiet)  # type: ignore[call-overload]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    env.update(STORYLOOM_LOG_LEVEL="WARNING", **extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "storyloom.cli", *args]


class _Nodes:
    def __init__(
        self, cfg: NodesConfig, workdir: Path, database_url: str, redis_url: str, sim_url: str
    ) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.env = _env(
            STORYLOOM_DATABASE_URL=database_url,
            STORYLOOM_EVENT_HUB_URL=redis_url,
            STORYLOOM_PROFILE="generic",
            STORYLOOM_BASE_URL=sim_url,
            STORYLOOM_MODEL="sim-writer",
        )
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []
        self.api_urls: list[str] = []

    def start(self) -> None:
        b = self.cfg.bench
        max_pending = str(max(10_000, b.clients * 2))
        for i in range(self.cfg.api_nodes):
            host = f"127.0.0.{2 + i}"
            port = _free_port(host)
            data = str(self.workdir / f"api{i + 1}")
            args = ["serve", "--host", host, "--port", str(port), "--workers", "0", "--no-auth",
                    "--data-dir", data, "--max-pending", max_pending]  # fmt: skip
            self._spawn(f"api{i + 1}", args)
            _wait_port(host, port, 120)
            self.api_urls.append(f"http://{host}:{port}")
        for i in range(self.cfg.worker_nodes):
            args = ["worker", "--concurrency", str(b.concurrency), "--lease-s", str(b.lease_s),
                    "--data-dir", str(self.workdir / f"worker{i + 1}"),
                    "--worker-id", f"worker{i + 1}@127.0.0.{2 + self.cfg.api_nodes + i}"]  # fmt: skip
            if i > 0:
                args.append("--no-schedule")  # one node ticks the periodic jobs
            self._spawn(f"worker{i + 1}", args)

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("w") as log:
            proc = subprocess.Popen(
                _cli(*args), stdout=subprocess.DEVNULL, stderr=log, text=True, env=self.env
            )
        self.procs.append((name, proc))

    def cpu_s(self) -> dict[str, float]:
        out = {"api": 0.0, "workers": 0.0}
        for name, proc in self.procs:
            try:
                root = psutil.Process(proc.pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for member in family:
                with contextlib.suppress(psutil.Error):
                    t = member.cpu_times()
                    out["api" if name.startswith("api") else "workers"] += t.user + t.system
        return out

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _client(http: aiohttp.ClientSession, submit_url: str, follow_url: str, i: int, cfg: BenchConfig,
                  state: _Client) -> None:  # fmt: skip
    """Submit to one API node, follow on another (reconnecting there with Last-Event-ID)."""
    body = {"novel_input": _input(i), "versions": cfg.versions, "idempotency_key": f"bench-{i}"}
    state.submitted_at = time.time()
    await _submit_until_accepted(http, submit_url, body, state)
    await _follow(http, follow_url, state, resuming=False)


async def _drive(cfg: BenchConfig, urls: list[str]) -> tuple[list[_Client], float]:
    states = [_Client() for _ in range(cfg.clients)]
    connector = aiohttp.TCPConnector(limit=cfg.clients * 2 + 20)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60.0, sock_read=120.0)
    started = time.time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        clients = (
            _client(http, urls[i % len(urls)], urls[(i + 1) % len(urls)], i, cfg, s)
            for i, s in enumerate(states)
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.timeout_s):
                await asyncio.gather(*clients)
    return states, time.time() - started


def _wait_for_nodes(nodes: _Nodes, database_url: str, timeout_s: float = 180.0) -> None:
    """Until every node holds a connection to the database (they boot slowly on a busy machine):
    a worker connects once its imports are done, just before it starts claiming."""
    port = urlsplit(database_url.replace("+asyncpg", "")).port or 5432
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = [name for name, proc in nodes.procs if not _connected(proc.pid, port)]
        if not waiting:
            return
        time.sleep(0.5)
    raise ConfigError(f"{', '.join(waiting)} did not connect to the database within {timeout_s:.0f} s.")


def _connected(pid: int, port: int) -> bool:
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for member in family:
        with contextlib.suppress(psutil.Error):
            if any(c.raddr and c.raddr.port == port for c in member.net_connections(kind="tcp")):
                return True
    return False


def _job_error(url: str, job_id: str) -> str | None:
    try:
        doc: dict[str, Any] = httpx.get(f"{url}/api/jobs/{job_id}", timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"unreadable: {type(exc).__name__}"
    return str(doc.get("error") or doc.get("status"))


def run_nodes_bench(cfg: NodesConfig) -> dict[str, Any]:
    b = cfg.bench
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-nodes-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        database_url = cfg.database_url or stack.enter_context(_postgres(workdir))
        redis_url = cfg.redis_url or stack.enter_context(_redis(workdir))
        profile = {"ttft_s": b.ttft_s, "tokens_per_s": b.tokens_per_s, "answer_tokens": b.answer_tokens,
                   "jitter": b.jitter}  # fmt: skip
        sim = stack.enter_context(SimProcess({"seed": 11, "default": profile, "chunk_interval_s": 0.02},
                                             nice=b.sim_nice))  # fmt: skip
        subprocess.run(
            _cli("keys", "list"),
            check=True,
            capture_output=True,
            env=_env(STORYLOOM_DATABASE_URL=database_url),
        )
        nodes = _Nodes(cfg, workdir, database_url, redis_url, sim.url)
        stack.callback(nodes.stop)
        nodes.start()
        _wait_for_nodes(nodes, database_url)
        time.sleep(b.settle_s)
        sim.reset()
        cpu_before = nodes.cpu_s()
        states, wall = eventloop.run(_drive(b, nodes.api_urls))
        cpu_after = nodes.cpu_s()
        stats = sim.stats()
        failed = [s.job_id for s in states if s.job_id and s.status != "completed"][:3]
        errors = [_job_error(nodes.api_urls[0], job) for job in failed]
    calls = int(stats.get("completed") or stats.get("requests") or 0)
    cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
    submitted = sum(1 for s in states if s.submitted_at)
    completed = sum(1 for s in states if s.status == "completed")
    lags = [lag for s in states for lag in s.lags_s]
    e2e = [s.finished_at - s.submitted_at for s in states if s.finished_at is not None]
    return {
        "nodes": {
            "api": cfg.api_nodes,
            "workers": cfg.worker_nodes,
            "database": "postgres",
            "event_hub": "redis",
        },
        "clients": b.clients,
        "versions": b.versions,
        "submitted": submitted,
        "completed": completed,
        "completed_ratio": round(completed / submitted, 4) if submitted else 0.0,
        "statuses": dict(Counter(s.status or "unfinished" for s in states)),
        "e2e_p50_s": round(_percentile(e2e, 0.5), 3),
        "e2e_p99_s": round(_percentile(e2e, 0.99), 3),
        "event_lag_p50_ms": round(_percentile(lags, 0.5) * 1000, 1),
        "event_lag_p99_ms": round(_percentile(lags, 0.99) * 1000, 1),
        "events_live": len(lags),
        "events_exactly_once_in_order": all(
            s.seqs == list(range(1, len(s.seqs) + 1)) for s in states if s.status
        ),
        "reconnects": sum(s.reconnects for s in states),
        "first_submit_error": next((s.error for s in states if s.error), None),
        "not_completed_errors": errors,
        "model_calls": calls,
        "cpu_s": cpu,
        "cpu_ms_per_model_call": round((cpu["api"] + cpu["workers"]) * 1000 / calls, 2) if calls else None,
        "wall_s": round(wall, 2),
        "simulator": {**profile, "nice": b.sim_nice},
    }
