"""Queue contract tests, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from storyloom.errors import InputError, JobNotFoundError, QueueFullError
from storyloom.jobs import Job, JobQueue, JobStatus
from storyloom.store import Database


async def test_submit_then_get_round_trips(queue: JobQueue) -> None:
    job = await queue.submit("chapter", {"outline": "雨夜"}, priority=7, tenant="t1")
    got = await queue.get(job.id)
    assert got.status is JobStatus.PENDING
    assert got.payload == {"outline": "雨夜"}
    assert (got.priority, got.tenant, got.attempts) == (7, "t1", 0)
    assert got == job  # what submit answered is what was stored
    evs = await queue.events(job.id)
    assert [(e.seq, e.kind) for e in evs] == [(1, "job.submitted")]


async def test_bad_input_is_a_clear_error(queue: JobQueue) -> None:
    with pytest.raises(InputError):
        await queue.submit("chapter", {}, priority=10)
    with pytest.raises(InputError):
        await queue.submit("chapter", {}, max_attempts=0)
    with pytest.raises(JobNotFoundError):
        await queue.get("nope")


async def test_claim_takes_highest_priority_first_and_respects_run_at(queue: JobQueue) -> None:
    low = await queue.submit("k", {}, priority=1)
    high = await queue.submit("k", {}, priority=9)
    await queue.submit("k", {}, priority=9, run_at=time.time() + 60)  # not due
    mid = await queue.submit("k", {}, priority=5)
    claimed = await queue.claim("w1", limit=10, lease_s=10)
    assert [j.id for j in claimed] == [high.id, mid.id, low.id]
    assert all(j.status is JobStatus.RUNNING and j.lease_owner == "w1" and j.attempts == 1 for j in claimed)
    assert await queue.claim("w2", limit=10, lease_s=10) == []


async def test_concurrent_claims_never_share_a_job(queue: JobQueue) -> None:
    for _ in range(40):
        await queue.submit("k", {})
    got = await asyncio.gather(*(queue.claim(f"w{i}", limit=7, lease_s=10) for i in range(8)))
    ids = [j.id for batch in got for j in batch]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_idempotency_key_race_yields_one_job(queue: JobQueue) -> None:
    jobs = await asyncio.gather(
        *(queue.submit("chapter", {"n": i}, idempotency_key="hash-1") for i in range(20))
    )
    assert len({j.id for j in jobs}) == 1
    assert (await queue.stats()).queued == 1
    other_tenant = await queue.submit("chapter", {}, idempotency_key="hash-1", tenant="other")
    assert other_tenant.id != jobs[0].id


async def test_retry_with_backoff_then_dead_letter(queue: JobQueue) -> None:
    job = await queue.submit("k", {}, max_attempts=2)
    [c] = await queue.claim("w", limit=1, lease_s=10)
    assert await queue.fail(c.id, "w", "boom 1") is JobStatus.RETRYING
    retry = await queue.get(job.id)
    assert retry.status is JobStatus.RETRYING and retry.run_at > time.time() - 0.01
    assert await queue.claim("w", limit=1, lease_s=10) == [] or retry.run_at <= time.time()
    claimed: list[Job] = []
    for _ in range(40):  # backoff_max_s is 0.2 in the fixture; a loaded machine may take longer
        await asyncio.sleep(0.05)
        claimed = await queue.claim("w", limit=1, lease_s=10)
        if claimed:
            break
    [c2] = claimed
    assert c2.attempts == 2
    assert await queue.fail(c2.id, "w", "boom 2") is JobStatus.FAILED
    dead = await queue.get(job.id)
    assert dead.status is JobStatus.FAILED and dead.error == "boom 2" and dead.finished_at is not None
    kinds = [e.kind for e in await queue.events(job.id)]
    assert kinds == ["job.submitted", "job.retrying", "job.failed"]


async def test_non_retryable_failure_goes_straight_to_dead_letter(queue: JobQueue) -> None:
    job = await queue.submit("k", {}, max_attempts=5)
    await queue.claim("w", limit=1, lease_s=10)
    assert await queue.fail(job.id, "w", "bad request", retryable=False) is JobStatus.FAILED


async def test_backoff_grows_exponentially() -> None:
    q = JobQueue.__new__(JobQueue)
    q.backoff_base_s, q.backoff_max_s = 1.0, 100.0
    assert 0.5 <= q.backoff_delay_s(1) <= 1.0
    assert 4.0 <= q.backoff_delay_s(4) <= 8.0
    assert 50.0 <= q.backoff_delay_s(30) <= 100.0


async def test_cancel_pending_is_immediate_and_running_is_flagged(queue: JobQueue) -> None:
    pending = await queue.submit("k", {})
    assert (await queue.cancel(pending.id)).status is JobStatus.CANCELLED
    running = await queue.submit("k", {})
    await queue.claim("w", limit=5, lease_s=10)
    flagged = await queue.cancel(running.id)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    hb = await queue.heartbeat("w", lease_s=10)
    assert hb.owned == {running.id} and hb.cancel_requested == {running.id}
    assert await queue.finish_cancelled(running.id, "w")
    assert (await queue.get(running.id)).status is JobStatus.CANCELLED


async def test_expired_lease_is_claimed_again_and_old_owner_is_fenced(queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    await queue.claim("dead-worker", limit=1, lease_s=0.2)
    assert await queue.claim("w2", limit=1, lease_s=10) == []
    await asyncio.sleep(0.3)
    [again] = await queue.claim("w2", limit=1, lease_s=10)
    # the lost run was not the job's fault: no attempt spent, one lease loss counted
    assert again.id == job.id and again.attempts == 1 and again.lease_owner == "w2"
    assert again.lease_losses == 1
    assert not await queue.complete(job.id, "dead-worker", {"x": 1})  # fenced
    assert (await queue.heartbeat("dead-worker", lease_s=10)).owned == frozenset()
    assert await queue.complete(job.id, "w2", {"x": 2})
    assert (await queue.get(job.id)).result == {"x": 2}


async def test_heartbeat_renews_all_leases_in_one_statement(queue: JobQueue) -> None:
    for _ in range(5):
        await queue.submit("k", {})
    claimed = await queue.claim("w", limit=5, lease_s=0.3)
    for _ in range(4):
        await asyncio.sleep(0.15)
        hb = await queue.heartbeat("w", lease_s=0.3)
        assert hb.owned == {j.id for j in claimed}
    assert await queue.claim("thief", limit=5, lease_s=10) == []
    keep = claimed[0].id
    for _ in range(3):  # renewing only the runs it has: the orphaned leases run out
        await asyncio.sleep(0.15)
        assert (await queue.heartbeat("w", lease_s=0.3, job_ids=[keep])).owned == {keep}
    stolen = await queue.claim("thief", limit=5, lease_s=10)
    assert {j.id for j in stolen} == {j.id for j in claimed} - {keep}


async def test_release_returns_jobs_without_spending_an_attempt(queue: JobQueue) -> None:
    job = await queue.submit("k", {})
    await queue.claim("w", limit=1, lease_s=10)
    assert await queue.release("w") == 1
    back = await queue.get(job.id)
    assert back.status is JobStatus.PENDING and back.attempts == 0 and back.lease_owner is None


async def test_depends_on_waits_for_completion_and_failure_cascades(queue: JobQueue) -> None:
    first = await queue.submit("chapter", {"i": 1})
    second = await queue.submit("chapter", {"i": 2}, depends_on=first.id)
    third = await queue.submit("chapter", {"i": 3}, depends_on=second.id)
    [c] = await queue.claim("w", limit=10, lease_s=10)
    assert c.id == first.id
    assert await queue.complete(first.id, "w", {})
    [c2] = await queue.claim("w", limit=10, lease_s=10)
    assert c2.id == second.id
    assert await queue.fail(second.id, "w", "broken", retryable=False) is JobStatus.FAILED
    assert (await queue.get(third.id)).status is JobStatus.FAILED


async def test_full_queue_refuses_with_retry_after(db: Database) -> None:
    q = JobQueue(db, max_backlog=2)
    await q.submit("k", {})
    await q.submit("k", {})
    with pytest.raises(QueueFullError) as info:
        await q.submit("k", {})
    assert info.value.retry_after_s > 0


async def test_submissions_arriving_together_share_one_transaction_each_with_its_own_answer(
    db: Database,
) -> None:
    q = JobQueue(db, max_backlog=30)
    old = await q.submit("k", {}, idempotency_key="old")
    keys = ["dup"] * 5 + ["old"] + [f"new-{i}" for i in range(40)]
    outcomes = await asyncio.gather(
        *(q.submit("k", {"i": i}, idempotency_key=key) for i, key in enumerate(keys)),
        return_exceptions=True,
    )
    assert q._intake is not None and q._intake.batcher.batches == 2  # the first submission, then all of these
    dups = outcomes[:5]
    assert all(isinstance(d, Job) and d.id == dups[0].id for d in dups)  # type: ignore[union-attr]
    assert isinstance(outcomes[5], Job) and outcomes[5].id == old.id
    # 1 queued before; "dup" and the first 28 new keys fit under 30; the other 12 are refused
    new = outcomes[6:]
    assert all(isinstance(o, Job) for o in new[:28])
    assert all(isinstance(o, QueueFullError) and o.retry_after_s > 0 for o in new[28:])
    assert (await q.stats()).queued == 30
    for job in [old, dups[0], *new[:28]]:
        assert isinstance(job, Job)
        assert [(e.seq, e.kind) for e in await q.events(job.id)] == [(1, "job.submitted")]


async def test_a_submitter_that_gave_up_before_its_batch_was_written_leaves_no_job(db: Database) -> None:
    q = JobQueue(db)
    release = threading.Event()

    async def hold_the_write_thread(conn: object) -> None:
        await asyncio.to_thread(release.wait, 30)  # on the write thread's loop: it writes nothing else

    holding = asyncio.ensure_future(db.transaction(hold_the_write_thread))
    first = asyncio.ensure_future(q.submit("k", {}, idempotency_key="first"))
    await asyncio.sleep(0.05)  # first's batch waits behind the held thread
    second = asyncio.ensure_future(q.submit("k", {}, idempotency_key="second"))
    await asyncio.sleep(0.05)
    second.cancel()
    release.set()
    await holding
    assert (await first).idempotency_key == "first"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert q._intake is not None
    await q._intake.batcher.idle()  # the intake has written all it was going to
    assert (await q.stats()).queued == 1  # "first" only


async def test_stats_count_by_status(queue: JobQueue) -> None:
    a = await queue.submit("k", {})
    await queue.submit("k", {})
    await queue.submit("k", {}, run_at=time.time() + 100)
    await queue.claim("w", limit=1, lease_s=10)
    await queue.complete(a.id, "w", {})
    s = await queue.stats()
    assert s.counts["completed"] == 1 and s.queued == 2 and s.due == 1 and s.running == 0


async def test_run_starts_reads_a_whole_claims_offsets_and_checkpoints_at_once(
    db: Database, queue: JobQueue
) -> None:
    from storyloom.jobs import DurableCheckpoints, GroupCommitWriter, JobEventSink

    fresh, resumed = await queue.submit("k", {}), await queue.submit("k", {})
    writer = GroupCommitWriter(db)
    sink = await JobEventSink.open(db, writer, resumed.id)
    for _ in range(3):
        sink.append("step.delta", {})
    await DurableCheckpoints(db, writer).save(resumed.id, "director", {"plan": 1})
    await writer.stop()
    starts = await queue.run_starts([fresh.id, resumed.id, "no-such-job"])
    assert starts == {fresh.id: (1, False), resumed.id: (4, True), "no-such-job": (0, False)}

    store = DurableCheckpoints(db, writer)
    store.known_empty.add(resumed.id)  # wrongly, to show the shortcut: one load answers {} unasked
    assert await store.load(resumed.id) == {}
    assert await store.load(resumed.id) == {"director": {"plan": 1}}
