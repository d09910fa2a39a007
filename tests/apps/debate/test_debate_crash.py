"""kill -9 of a worker mid-debate: the conversation resumes on another worker, only the steps that
were in flight are paid again, and the turn is stored once."""

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

from storyloom.apps.debate.conversations import ConversationStore
from storyloom.jobs import JobQueue, JobStatus
from storyloom.registry import AppRegistry
from storyloom.sim import ModelProfile, SimConfig, run_sim_in_thread
from storyloom.store import Database
from storyloom.store.schema import checkpoints, events, usage

pytestmark = pytest.mark.slow

ENTRY = "from storyloom.cli import main; main()"


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    """Calls of ~0.4 s, so a kill lands while steps are in flight."""
    config = SimConfig(seed=3, default=ModelProfile(ttft_s=0.2, tokens_per_s=1000.0, answer_tokens=200))
    with run_sim_in_thread(config) as handle:
        yield handle


def _worker(url: str, sim_url: str, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STORYLOOM_PROFILE": "generic",
        "STORYLOOM_BASE_URL": sim_url,
        "STORYLOOM_MODEL": "sim-writer",
    }
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        "worker",
        "--database-url",
        url,
        "--lease-s",
        "3",
        "--worker-id",
        name,
    ]
    return subprocess.Popen(
        [*cmd, "--no-schedule"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _until(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _message(text: str) -> dict[str, Any]:
    return {"input": {"message": text, "session_id": "k9", "search": "never", "max_rounds": 3, "critics": 3}}


async def test_a_killed_worker_costs_only_the_steps_in_flight(tmp_path: Path, slow_sim: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'k9.db'}"
    db = Database.from_url(url)
    await db.migrate(AppRegistry.discover().migrations())
    queue = JobQueue(db)
    victim = _worker(url, slow_sim.url, "victim")
    try:
        first = await queue.submit("debate", _message("Should we move the team to a four-day week?"))
        await _until(lambda: _terminal(queue, first.id), 60, "the first message")
        second = await queue.submit("debate", _message("And how do we measure whether it worked?"))

        async def mid_debate() -> bool:
            async with db.read() as conn:
                steps = {
                    r[0]
                    for r in await conn.execute(
                        sa.select(checkpoints.c.step).where(checkpoints.c.run_id == second.id)
                    )
                }
            return "plan" in steps and any(s.startswith("rounds/r1/critic") for s in steps)

        await _until(mid_debate, 60, "the second message's first critics")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    async with db.read() as conn:
        saved = {
            r[0]
            for r in await conn.execute(
                sa.select(checkpoints.c.step).where(checkpoints.c.run_id == second.id)
            )
        }
        last_event = int(await conn.scalar(sa.select(sa.func.max(events.c.id))) or 0)
        before = (
            await conn.execute(sa.select(events.c.kind, events.c.step).where(events.c.job_id == second.id))
        ).all()
    assert (await queue.get(second.id)).status is JobStatus.RUNNING  # the kill interrupted it
    started = {s for k, s in before if k == "step.started"}
    ended = {s for k, s in before if k in ("step.finished", "step.failed", "step.skipped")}
    in_flight = started - ended - saved

    rescuer = _worker(url, slow_sim.url, "rescuer")
    try:
        await _until(lambda: _terminal(queue, second.id), 90, "the second message after the kill")
    finally:
        rescuer.send_signal(signal.SIGTERM)
        assert rescuer.wait(30) == 0
    done = await queue.get(second.id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 2, done.error
    async with db.read() as conn:
        after = (
            await conn.execute(
                sa.select(events.c.kind, events.c.step).where(
                    events.c.job_id == second.id, events.c.id > last_event
                )
            )
        ).all()
        paid = (
            await conn.execute(
                sa.select(usage.c.step, sa.func.count())
                .where(usage.c.job_id == second.id)
                .group_by(usage.c.step)
            )
        ).all()
    rerun = {s for k, s in after if k == "step.started"}
    restored = {s for k, s in after if k == "step.restored"}
    assert in_flight and restored and saved  # the kill landed mid-debate, with work on both sides
    assert not (rerun & saved), "a checkpointed step ran again"
    assert {s for s in saved if s.count("/") <= 2} <= restored | {
        "rounds"
    }  # leaf steps came back from the store
    # Paid twice: only the model steps in flight at the kill.
    twice = {str(step) for step, n in paid if n > 1}
    assert twice <= in_flight, (twice, in_flight)
    assert all(n == 1 for step, n in paid if step in saved)
    # The conversation resumed: both turns stored once, in order.
    conversation = await ConversationStore(db).get("default", "k9")
    assert conversation is not None
    assert [t.role for t in conversation.turns] == ["user", "assistant", "user", "assistant"]
    assert conversation.turns[3].content == (done.result or {})["text"]
    await db.close()


async def _terminal(queue: JobQueue, job_id: str) -> bool:
    return (await queue.get(job_id)).status.is_terminal
