"""Real worker processes killed with SIGKILL: deaths spend no attempt; a poison job is found.

Both databases (the `db_url` fixture). Slow: each death waits for a worker to start and for its
leases to run out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from storyloom.jobs import JobQueue, JobStatus
from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread
from storyloom.store import Database
from storyloom.store.schema import checkpoints

pytestmark = pytest.mark.slow

ENTRY = "from storyloom.cli import main; main()"
APPS_DIR = Path(__file__).parent / "apps"


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    config = SimConfig(seed=3, default=ModelProfile(ttft_s=0.15, tokens_per_s=1500.0, answer_tokens=200))
    with run_sim_in_thread(config) as handle:
        yield handle


def _worker(url: str, sim_url: str, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STORYLOOM_PROFILE": "generic",
        "STORYLOOM_BASE_URL": sim_url,
        "STORYLOOM_MODEL": "sim-writer",
        "STORYLOOM_APPS": "crashy_app:app",
        "PYTHONPATH": os.pathsep.join([str(APPS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-c", ENTRY, "worker", "--database-url", url, "--concurrency", "50",
           "--lease-s", "1", "--worker-id", name, "--no-schedule"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _chapter(i: int) -> dict[str, Any]:
    return {"input": {"chapter_outline": f"第{i}章：夜雨", "target_length": 300, "language": "zh",
                      "versions": 2, "max_parallel": 2}}  # fmt: skip


async def test_three_kills_during_a_job_with_max_attempts_1_still_complete(
    db_url: str, slow_sim: Any
) -> None:
    """Without the fix the second run of every interrupted job is attempt 2 of 1: dead-lettered."""
    db = Database.from_url(db_url)
    await db.migrate()
    queue = JobQueue(db)
    ids = [(await queue.submit("novel", _chapter(i), max_attempts=1)).id for i in range(6)]

    async def n_checkpoints() -> int:
        async with db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(checkpoints)) or 0)

    try:
        for kill in range(3):
            before = await n_checkpoints()
            victim = _worker(db_url, slow_sim.url, f"victim-{kill}")
            try:

                async def progressed(before: int = before) -> bool:
                    return await n_checkpoints() >= before + 4

                await _wait(progressed, 60, f"progress before kill {kill + 1}")
            finally:
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
        rescuer = _worker(db_url, slow_sim.url, "rescuer")
        try:

            async def all_done() -> bool:
                return all([(await queue.get(i)).status.is_terminal for i in ids])

            await _wait(all_done, 120, "every job to end")
        finally:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(30)
        final = [await queue.get(i) for i in ids]
        assert all(j.status is JobStatus.COMPLETED for j in final), [j.error for j in final]
        assert all(j.attempts == 1 for j in final)
        assert max(j.lease_losses for j in final) >= 2  # some job lived through several deaths
    finally:
        await db.close()


async def test_a_job_that_kills_every_worker_is_dead_lettered_by_name(db_url: str, slow_sim: Any) -> None:
    db = Database.from_url(db_url)
    await db.migrate()
    queue = JobQueue(db)
    poison = await queue.submit("crashy", {"input": {"poison": True, "sleep_s": 0.5}})
    healthy = [(await queue.submit("crashy", {"input": {"sleep_s": 0.1}})).id for _ in range(3)]
    deaths = 0
    try:
        while not (await queue.get(poison.id)).status.is_terminal:
            assert deaths < 8, "the poison job was never singled out"
            worker = _worker(db_url, slow_sim.url, f"w-{deaths}")
            try:
                code = await asyncio.to_thread(worker.wait, 60)
            finally:
                if worker.poll() is None:
                    worker.kill()
            assert code == -signal.SIGKILL
            deaths += 1
            await asyncio.sleep(1.1)  # its lease runs out
            await _reap(queue)
        dead = await queue.get(poison.id)
        assert dead.status is JobStatus.FAILED, dead
        assert dead.error is not None and poison.id in dead.error and "poison" in dead.error
        assert deaths == 3  # alone at each of three deaths, without finishing a step
        for job_id in healthy:
            job = await queue.get(job_id)
            assert job.status is JobStatus.COMPLETED and job.attempts == 1
    finally:
        await db.close()


async def _reap(queue: JobQueue) -> None:
    """The reaper runs inside every claim: claim one job and give it straight back."""
    got = await queue.claim("probe", limit=1, lease_s=5)
    if got:
        await queue.release("probe", [j.id for j in got])


async def test_supervisor_voids_a_dead_workers_leases_at_once(tmp_path: Path, slow_sim: Any) -> None:
    """With 60 s leases, the killed worker's jobs come back when the supervisor sees it die."""
    from storyloom.serve.supervisor import Supervisor, SupervisorConfig

    url = f"sqlite+aiosqlite:///{tmp_path / 'sup.db'}"
    db = Database.from_url(url)
    await db.migrate()
    queue = JobQueue(db)
    env = {"STORYLOOM_PROFILE": "generic", "STORYLOOM_BASE_URL": slow_sim.url}
    config = SupervisorConfig(
        database_url=url,
        min_workers=1,
        max_workers=1,
        concurrency=10,
        worker_args=["--lease-s", "60", "--no-schedule"],
        env={**env, "STORYLOOM_MODEL": "sim-writer"},
        check_every_s=0.2,
        restart_backoff_s=0.2,
    )
    sup = Supervisor(config, queue=queue)
    ids = [(await queue.submit("novel", _chapter(i))).id for i in range(3)]
    await sup.start()
    try:

        async def running() -> bool:
            async with db.read() as conn:
                return int(await conn.scalar(sa.select(sa.func.count()).select_from(checkpoints)) or 0) >= 2

        await _wait(running, 60, "the first steps")
        os.kill(sup.pids[0], signal.SIGKILL)

        async def all_done() -> bool:
            return all([(await queue.get(i)).status is JobStatus.COMPLETED for i in ids])

        await _wait(all_done, 45, "the jobs to finish well before their 60 s leases run out")
    finally:
        await sup.stop()
    final = [await queue.get(i) for i in ids]
    assert all(j.attempts == 1 for j in final) and max(j.lease_losses for j in final) == 1
    await db.close()
