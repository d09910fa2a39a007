"""Bulk event and checkpoint writes keep every value exactly, on SQLite (json_each) and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.store import Database
from storyloom.store.bulk import Rows, insert_events, upsert_checkpoints
from storyloom.store.schema import checkpoints, events

VALUES: list[Any] = [
    {"text": "少年林风 “quoted” \\ back\nslash", "n": [1, 2.5, None, True]},
    "a plain string",
    None,
    [1, "two", {"three": 3}],
    3.25,
    False,
]


async def test_events_keep_order_values_and_the_first_write_of_a_seq(db: Database) -> None:
    ts = time.time()
    rows = [
        {"job_id": "j", "seq": i + 1, "kind": "step.delta", "step": None if i % 2 else f"s/{i}", "ts": ts + i,
         "data": {"v": value}}
        for i, value in enumerate(VALUES)
    ]  # fmt: skip

    async def write(conn: AsyncConnection) -> None:
        await insert_events(db, conn, Rows(db, rows))
        await insert_events(db, conn, Rows(db, [{**rows[0], "data": {"v": "a zombie's late write"}}]))

    await db.transaction(write)
    async with db.read() as conn:
        got = (await conn.execute(sa.select(events).order_by(events.c.id))).all()
    assert [r.seq for r in got] == list(range(1, len(VALUES) + 1))  # ids in the order given
    assert [r.data for r in got] == [{"v": v} for v in VALUES]
    assert [(r.job_id, r.kind, r.step, r.ts) for r in got] == [
        (row["job_id"], row["kind"], row["step"], row["ts"]) for row in rows
    ]


async def test_checkpoints_store_any_json_value_and_a_rerun_replaces_it(db: Database) -> None:
    rows = [{"run_id": "r", "step": f"s{i}", "value": v, "created_at": 1.5} for i, v in enumerate(VALUES)]

    async def write(conn: AsyncConnection) -> None:
        await upsert_checkpoints(db, conn, Rows(db, rows))

    await db.transaction(write)

    async def rerun(conn: AsyncConnection) -> None:
        await upsert_checkpoints(
            db, conn, Rows(db, [{"run_id": "r", "step": "s1", "value": {"again": 1}, "created_at": 2.0}])
        )

    await db.transaction(rerun)
    async with db.read() as conn:
        got = {r.step: (r.value, r.created_at) for r in await conn.execute(sa.select(checkpoints))}
    expected = {f"s{i}": (v, 1.5) for i, v in enumerate(VALUES)}
    expected["s1"] = ({"again": 1}, 2.0)
    assert got == expected


async def test_jobs_by_ids_reads_the_same_jobs_as_a_plain_select(db: Database) -> None:
    import pytest

    from storyloom.jobs import Job, JobQueue
    from storyloom.store.bulk import jobs_by_ids
    from storyloom.store.schema import jobs

    queue = JobQueue(db)
    a = await queue.submit(
        "chapter", {"outline": "雨夜", "n": [1, 2.5, None]}, priority=7, idempotency_key="k"
    )
    b = await queue.submit("book", {}, run_at=1_800_000_000.123456, parent_id=a.id)
    await queue.cancel(b.id)
    async with db.read() as conn:
        packed = await jobs_by_ids(conn, [a.id, b.id, "missing"])
        plain = {r.id: Job.from_row(r) for r in await conn.execute(sa.select(jobs))}
    got = {row["id"]: Job.from_mapping(row) for row in packed}
    assert set(got) == {a.id, b.id}
    for job_id, job in got.items():
        want = plain[job_id]
        for name in ("run_at", "created_at", "updated_at", "finished_at"):
            assert getattr(job, name) == pytest.approx(getattr(want, name), abs=1e-6)
            setattr(job, name, getattr(want, name))
        assert job == want
    assert got[b.id].status.value == "cancelled" and got[b.id].cancel_requested is False


async def _three_jobs_of_events(db: Database) -> list[dict[str, Any]]:
    ts = time.time()
    rows = [
        {"job_id": job, "seq": seq, "kind": "step.delta", "step": "s", "ts": ts + seq, "data": {"n": seq}}
        for seq in range(1, 5)
        for job in ("a", "b", "c")
    ]

    async def write(conn: AsyncConnection) -> None:
        await insert_events(db, conn, Rows(db, rows))

    await db.transaction(write)
    return rows


async def test_event_reads_by_id_by_seq_and_for_many_jobs_at_once(db: Database) -> None:
    from storyloom.store.bulk import events_after_id, events_after_seqs, job_events_after

    await _three_jobs_of_events(db)
    async with db.read() as conn:
        everything = await events_after_id(conn, 0, 100)
        ids = [r[0] for r in everything]
        assert ids == sorted(ids) and len(ids) == 12
        tail = await events_after_id(conn, ids[8], 100)
        assert [r[0] for r in tail] == ids[9:]
        # the hub's re-read of ids it skipped comes back with the new rows, in id order
        with_holes = await events_after_id(conn, ids[8], 100, also_ids=[ids[1], ids[4], 10**12])
        assert [r[0] for r in with_holes] == [ids[1], ids[4], *ids[9:]]
        assert [r[0] for r in await events_after_id(conn, 0, 2, also_ids=[ids[5]])] == ids[:2]
        b = await job_events_after(conn, "b", 1, 2)
        assert [(r[1], r[2], r[6]) for r in b] == [("b", 2, {"n": 2}), ("b", 3, {"n": 3})]
        many = await events_after_seqs(conn, {"a": 0, "b": 3, "c": 4, "nobody": 0}, 3)
    assert {job: [r[2] for r in rows] for job, rows in many.items()} == {
        "a": [1, 2, 3], "b": [4], "c": [], "nobody": []
    }  # fmt: skip
    assert all(isinstance(r[5], float) and r[6] == {"n": r[2]} for rows in many.values() for r in rows)
    assert many["a"] == [r for r in everything if r[1] == "a"][:3]


def _job_row(job_id: str, key: str | None, **over: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "id": job_id, "kind": "k", "status": "pending", "priority": 5, "tenant": "t",
        "payload": {"p": VALUES}, "idempotency_key": key, "parent_id": None, "depends_on": None,
        "attempts": 0, "max_attempts": 3,
        "run_at": now, "created_at": now, "updated_at": now, "cancel_requested": False, **over,
    }  # fmt: skip


async def test_jobs_insert_skips_a_taken_key_and_says_what_it_inserted(db: Database) -> None:
    from storyloom.store.bulk import existing_job_ids, insert_jobs
    from storyloom.store.schema import jobs

    rows = [_job_row("a", "k1"), _job_row("b", "k1"), _job_row("c", None), _job_row("d", None, run_at=7)]

    async def write(conn: AsyncConnection) -> tuple[set[str] | None, set[str]]:
        told = await insert_jobs(db, conn, Rows(db, rows))
        return told, await existing_job_ids(conn, [r["id"] for r in rows])

    told, stored = await db.transaction(write)
    assert stored == {"a", "c", "d"}  # the first of a key wins
    if db.dialect == "postgresql":  # in the INSERT's own RETURNING: no look-up after it
        assert told == stored
    async with db.read() as conn:
        got = {r.id: r for r in await conn.execute(sa.select(jobs))}
    assert got["a"].payload == {"p": VALUES} and got["d"].run_at == 7.0
    assert got["c"].cancel_requested is False and got["c"].idempotency_key is None


async def test_a_value_too_long_for_its_column_is_refused_not_cut(db: Database) -> None:
    import pytest

    from storyloom.errors import StoreError
    from storyloom.store.bulk import insert_jobs

    if db.dialect != "postgresql":
        pytest.skip("SQLite does not enforce VARCHAR lengths")

    async def write(conn: AsyncConnection) -> None:
        await insert_jobs(db, conn, Rows(db, [_job_row("x", None, kind="k" * 41)]))

    with pytest.raises(StoreError):
        await db.transaction(write)
