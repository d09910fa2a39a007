"""Throw-away database servers for the benchmarks: a PostgreSQL cluster and a redis-server in a
temp directory on a free loopback port, started the way the test fixtures start them, and their
process trees (whose CPU a benchmark counts as part of the queue under test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["LocalServer", "postgres_server", "redis_server"]


@dataclass(frozen=True, slots=True)
class LocalServer:
    url: str
    pid: int

    def processes(self) -> list[psutil.Process]:
        """The server and its children (PostgreSQL forks a backend per connection)."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@contextlib.contextmanager
def redis_server(*, aof_everysec: bool = False) -> Iterator[LocalServer | None]:
    """A redis-server (None if none is installed); `aof_everysec`: append-only file, fsync each second."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="storyloom-bench-redis-")
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "everysec"] if aof_everysec else ["--appendonly", "no"]
    )
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence, "--dir", workdir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield LocalServer(f"redis://127.0.0.1:{port}/0", proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    if not base.exists():
        return None
    found = sorted((p for p in base.iterdir() if (p / "bin" / "initdb").exists()), key=lambda p: p.name)
    return found[-1] / "bin" if found else None


@contextlib.contextmanager
def postgres_server() -> Iterator[LocalServer | None]:
    """A PostgreSQL cluster with its default durability (fsync on); None if none is installed."""
    bindir = _pg_bin()
    if bindir is None:
        yield None
        return
    port = _free_port()
    datadir = tempfile.mkdtemp(prefix="storyloom-bench-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    quiet = subprocess.DEVNULL
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        stdout=quiet,
        stderr=quiet,
    )
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir} -c max_connections=200"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", datadir]
    log = f"{datadir}/log"
    subprocess.run([*pg_ctl, "-o", opts, "-w", "-l", log, "start"], check=True, stdout=quiet, stderr=quiet)
    try:
        pid = int(Path(datadir, "postmaster.pid").read_text().split("\n", 1)[0])
        yield LocalServer(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", pid)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], stdout=quiet, stderr=quiet)
        shutil.rmtree(datadir, ignore_errors=True)
