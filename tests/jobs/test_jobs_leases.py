"""Lease losses are not attempts; poison jobs are dead-lettered by name (both databases)."""

from __future__ import annotations

import asyncio

from storyloom.jobs import JobQueue, JobStatus
from storyloom.store import Database

_LEASE_S = 0.3  # a dead worker's leases run out after this


async def _claim_all(queue: JobQueue, worker: str, n: int) -> list[str]:
    """Claim until n jobs are held (suspects come back after a short random delay)."""
    held: list[str] = []
    for _ in range(100):
        held += [j.id for j in await queue.claim(worker, limit=n - len(held), lease_s=_LEASE_S)]
        if len(held) >= n:
            break
        await asyncio.sleep(0.02)
    return held


async def test_worker_deaths_do_not_spend_attempts(db: Database) -> None:
    queue = JobQueue(db, max_lease_losses=20, poison_deaths=3, loss_spread_s=0.1)
    a = await queue.submit("k", {}, max_attempts=1)
    b = await queue.submit("k", {}, max_attempts=1)
    for i in range(6):  # six crashes with both jobs in flight: they die together, neither is singled out
        held = await _claim_all(queue, f"dead-{i}", 2)
        assert sorted(held) == sorted([a.id, b.id])
        await asyncio.sleep(_LEASE_S + 0.05)
    got = await _claim_all(queue, "alive", 2)
    assert sorted(got) == sorted([a.id, b.id])
    job = await queue.get(a.id)
    assert job.status is JobStatus.RUNNING and job.attempts == 1 and job.lease_losses == 6
    assert await queue.complete(a.id, "alive", {"ok": True})
    kinds = [e.kind for e in await queue.events(a.id)]
    assert kinds.count("job.lease_lost") == 6 and kinds[-1] == "job.completed"


async def test_max_lease_losses_dead_letters_naming_the_job(db: Database) -> None:
    queue = JobQueue(db, max_lease_losses=4, poison_deaths=100, loss_spread_s=0.1)
    job = await queue.submit("k", {})
    await queue.submit("k", {})  # a companion in every death: not a poison verdict
    for i in range(4):
        await _claim_all(queue, f"dead-{i}", 2)
        await asyncio.sleep(_LEASE_S + 0.05)
    await queue.claim("reaper", limit=1, lease_s=10)  # reaps the fourth death
    dead = await queue.get(job.id)
    assert dead.status is JobStatus.FAILED and dead.lease_losses == 4
    assert dead.error is not None and job.id in dead.error and "max_lease_losses 4" in dead.error


async def test_a_job_alone_at_each_death_is_poison(db: Database) -> None:
    queue = JobQueue(db, max_lease_losses=20, poison_deaths=3, loss_spread_s=0.1)
    poison = await queue.submit("k", {})
    for i in range(3):
        assert await _claim_all(queue, f"victim-{i}", 1) == [poison.id]
        await asyncio.sleep(_LEASE_S + 0.05)
    await queue.claim("next", limit=1, lease_s=10)  # reaps the third death
    dead = await queue.get(poison.id)
    assert dead.status is JobStatus.FAILED and dead.lease_losses == 3
    assert dead.error is not None and poison.id in dead.error and "poison" in dead.error


async def test_progress_between_deaths_clears_the_suspicion(db: Database) -> None:
    from storyloom.store.schema import checkpoints

    queue = JobQueue(db, max_lease_losses=20, poison_deaths=3, loss_spread_s=0.1)
    job = await queue.submit("k", {})
    for i in range(5):
        assert await _claim_all(queue, f"victim-{i}", 1) == [job.id]
        async with db.write() as conn:  # it finished a step before each death
            row = {"run_id": job.id, "step": f"s{i}", "value": {}, "created_at": 0.0}
            await conn.execute(checkpoints.insert().values(**row))
        await asyncio.sleep(_LEASE_S + 0.05)
    [back] = await _claim_all(queue, "alive", 1)
    assert back == job.id
    survivor = await queue.get(job.id)
    assert survivor.status is JobStatus.RUNNING and survivor.lease_losses == 5
