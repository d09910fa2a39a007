"""Real processes against the simulator: kill -9 a worker mid-run; the supervisor restarts and scales."""

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
from storyloom.serve.supervisor import Supervisor, SupervisorConfig
from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread
from storyloom.store import Database
from storyloom.store.schema import checkpoints, events

pytestmark = pytest.mark.slow

ENTRY = "from storyloom.cli import main; main()"


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    """Calls of ~0.3 s, so a kill lands while steps are in flight."""
    config = SimConfig(seed=7, default=ModelProfile(ttft_s=0.15, tokens_per_s=1500.0, answer_tokens=200))
    with run_sim_in_thread(config) as handle:
        yield handle


def _env(sim_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "STORYLOOM_PROFILE": "generic",
        "STORYLOOM_BASE_URL": sim_url,
        "STORYLOOM_MODEL": "sim-writer",
    }


def _start_worker(url: str, sim_url: str, worker_id: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        "worker",
        "--database-url",
        url,
        "--concurrency",
        "50",
        "--lease-s",
        "3",
        "--worker-id",
        worker_id,
        "--no-schedule",
    ]
    return subprocess.Popen(cmd, env=_env(sim_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _payload(i: int) -> dict[str, Any]:
    """A novel job's input (flat: the chapter's fields and its options)."""
    return {
        "chapter_outline": f"第{i}章：风雪夜归人",
        "target_length": 300,
        "language": "zh",
        "versions": 2,
        "max_parallel": 2,
    }


async def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_dash_nine_costs_only_the_steps_in_flight(db_url: str, slow_sim: Any) -> None:
    url = db_url  # SQLite file and PostgreSQL (the fixture is parametrized)
    db = Database.from_url(url)
    await db.migrate()
    queue = JobQueue(db)
    ids = [(await queue.submit("novel", {"input": _payload(i)})).id for i in range(8)]

    async def n_checkpoints() -> int:
        async with db.read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(checkpoints)) or 0)

    first = _start_worker(url, slow_sim.url, "victim")
    try:

        async def some_progress() -> bool:
            return await n_checkpoints() >= 12

        await _wait(some_progress, 60, "the first steps to finish")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    calls_at_kill = slow_sim.stats()["requests"]
    async with db.read() as conn:
        saved = {
            (r.run_id, r.step)
            for r in await conn.execute(sa.select(checkpoints.c.run_id, checkpoints.c.step))
        }
        last_event_id = int(await conn.scalar(sa.select(sa.func.max(events.c.id))) or 0)
    statuses = {(await queue.get(i)).status for i in ids}
    assert JobStatus.RUNNING in statuses  # the kill really interrupted running jobs

    second = _start_worker(url, slow_sim.url, "rescuer")
    try:

        async def all_done() -> bool:
            return all([(await queue.get(i)).status.is_terminal for i in ids])

        await _wait(all_done, 90, "every job to finish after the kill")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0  # a clean exit on SIGTERM
    final = [await queue.get(i) for i in ids]
    assert all(j.status is JobStatus.COMPLETED for j in final), [j.error for j in final]

    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(events.c.job_id, events.c.kind, events.c.step).where(events.c.id > last_event_id)
            )
        ).all()
    rerun = {(r.job_id, r.step) for r in rows if r.kind == "step.started"}
    restored = {(r.job_id, r.step) for r in rows if r.kind == "step.restored"}
    assert not (rerun & saved), "a checkpointed step was executed again"
    # every checkpoint of an unfinished job came back from the database instead of being recomputed
    interrupted = {j.id for j in final if j.lease_losses == 1 and j.attempts == 1}  # not an attempt
    assert interrupted and {s for s in saved if s[0] in interrupted} <= restored | {
        (r.job_id, r.step) for r in rows if r.kind == "step.finished"
    }
    # the paid-twice calls are at most the steps that were running at the kill (a few calls each)
    started_before = set()
    finished_before = set()
    async with db.read() as conn:
        for r in await conn.execute(
            sa.select(events.c.job_id, events.c.kind, events.c.step).where(events.c.id <= last_event_id)
        ):
            if r.kind == "step.started":
                started_before.add((r.job_id, r.step))
            elif r.kind in ("step.finished", "step.failed", "step.skipped"):
                finished_before.add((r.job_id, r.step))
    in_flight = started_before - finished_before - saved
    total_calls = slow_sim.stats()["requests"]
    assert total_calls > calls_at_kill
    # Paid twice: only steps that were started but not finished when the worker died.
    assert (rerun & started_before) <= in_flight
    assert rerun - started_before  # the rest of the work ran after the kill
    print(
        f"checkpoints at kill={len(saved)} in-flight steps={len(in_flight)} "
        f"re-run={len(rerun & started_before)} calls at kill={calls_at_kill} total={total_calls}"
    )
    await db.close()


async def test_supervisor_restarts_killed_worker_and_scales_on_backlog(tmp_path: Path, slow_sim: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sup.db'}"
    db = Database.from_url(url)
    await db.migrate()
    queue = JobQueue(db)
    sup = Supervisor(
        SupervisorConfig(
            database_url=url,
            min_workers=1,
            max_workers=2,
            concurrency=2,
            worker_args=["--lease-s", "3", "--no-schedule"],
            env={
                "STORYLOOM_PROFILE": "generic",
                "STORYLOOM_BASE_URL": slow_sim.url,
                "STORYLOOM_MODEL": "sim-writer",
            },
            backlog_per_worker=3,
            scale_up_after_s=1.0,
            idle_after_s=2.0,
            check_every_s=0.2,
            restart_backoff_s=0.2,
        ),
        queue=queue,
    )
    await sup.start()
    try:
        assert sup.worker_count == 1
        victim = sup.pids[0]
        os.kill(victim, signal.SIGKILL)

        async def restarted() -> bool:
            return sup.worker_count == 1 and sup.pids[0] != victim

        await _wait(restarted, 20, "the supervisor to restart the killed worker")
        assert sup.restarts == 1

        ids = [(await queue.submit("novel", {"input": _payload(i)}, max_attempts=1)).id for i in range(16)]

        async def scaled() -> bool:
            return sup.worker_count == 2

        await _wait(scaled, 30, "a second worker for the backlog")
        assert sup.scale_ups >= 1

        async def all_done() -> bool:
            return all([(await queue.get(i)).status.is_terminal for i in ids])

        await _wait(all_done, 120, "the backlog to drain")

        async def shrunk() -> bool:
            return sup.worker_count == 1

        await _wait(shrunk, 30, "an idle worker to be stopped")
    finally:
        await sup.stop()
    assert sup.worker_count == 0
    await db.close()
