"""Shared fixtures: real servers on loopback (simulator, redis-server, PostgreSQL), never mocks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.store import Database
from support.databases import fresh_database_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, for the session."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="storyloom-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    if not base.exists():
        return None
    versions = sorted((p for p in base.iterdir() if (p / "bin" / "initdb").exists()), key=lambda p: p.name)
    return versions[-1] / "bin" if versions else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL cluster in a temp dir on a free loopback port (trust auth), for the session."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    port = free_port()
    datadir = tempfile.mkdtemp(prefix="storyloom-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", datadir, "-o", opts, "-w", "-l", f"{datadir}/log", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", datadir, "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def sim() -> Iterator[Any]:
    """A running simulator (`storyloom.sim.SimHandle`) in a thread, with fast latencies.

    `sim.url` ends in /v1; `sim.configure(**patch)` changes it live; `sim.stats()` reads /stats.
    """
    from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread

    config = SimConfig(
        seed=42,
        default=ModelProfile(ttft_s=0.005, tokens_per_s=200_000.0, answer_tokens=120),
        chunk_interval_s=0.01,
    )
    with run_sim_in_thread(config) as handle:
        yield handle


# ---- databases: every store/jobs contract test runs on SQLite and on a real PostgreSQL ----------



@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await fresh_database_url(request.param, tmp_path, request)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    from storyloom.registry import AppRegistry

    database = Database.from_url(db_url, pool_size=4)
    await database.migrate(AppRegistry.discover().migrations())  # the engine's tables and the apps'

    try:
        yield database
    finally:
        await database.close()
