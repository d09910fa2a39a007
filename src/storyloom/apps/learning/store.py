"""`LearningStore`: the learning tables, every read and write scoped to one tenant."""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.learning.tables import analyses, cost_stats, memories, vectors
from storyloom.store.database import Database
from storyloom.store.schema import jobs, usage

__all__ = ["LearningStore"]


def _id() -> str:
    return uuid.uuid4().hex


class LearningStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_memory(self, tenant: str, session_id: str, job_id: str, topic: str, summary: str) -> str:
        """The memory of a consolidation job (its id; the same job's earlier row if it ran before)."""
        db = self._db

        async def tx(conn: AsyncConnection) -> str:
            await conn.execute(
                db.insert(memories)
                .values(
                    id=_id(),
                    tenant=tenant,
                    session_id=session_id,
                    job_id=job_id,
                    topic=topic[:200],
                    summary=summary,
                    created_at=time.time(),
                )
                .on_conflict_do_nothing(index_elements=["job_id"])
            )
            row = (await conn.execute(sa.select(memories.c.id).where(memories.c.job_id == job_id))).one()
            return str(row[0])

        return await db.transaction(tx)

    async def add_analysis(self, tenant: str, session_id: str, job_id: str, found: dict[str, Any]) -> None:
        await self._db.execute(
            self._db.insert(analyses)
            .values(
                id=_id(),
                tenant=tenant,
                session_id=session_id,
                job_id=job_id,
                understanding=int(found["understanding"]),
                gaps=list(found["gaps"]),
                next_questions=list(found["next_questions"]),
                created_at=time.time(),
            )
            .on_conflict_do_nothing(index_elements=["job_id"])
        )

    async def memory(self, tenant: str, memory_id: str) -> dict[str, Any] | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(memories).where(memories.c.tenant == tenant, memories.c.id == memory_id)
                )
            ).first()
        return dict(row._mapping) if row is not None else None

    async def put_vector(self, tenant: str, memory_id: str, model: str, vector: list[float]) -> None:
        values = {"model": model, "dims": len(vector), "vector": vector, "created_at": time.time()}
        await self._db.execute(
            self._db.insert(vectors)
            .values(memory_id=memory_id, tenant=tenant, **values)
            .on_conflict_do_update(index_elements=["memory_id"], set_=values)
        )

    async def vector(self, tenant: str, memory_id: str) -> list[float] | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(vectors.c.vector).where(
                        vectors.c.tenant == tenant, vectors.c.memory_id == memory_id
                    )
                )
            ).first()
        return [float(x) for x in row[0]] if row is not None else None

    async def session(self, tenant: str, session_id: str, *, limit: int = 50) -> dict[str, Any] | None:
        """The session's memories and analyses, newest first (None: the tenant has no such session)."""
        async with self._db.read() as conn:
            mems = (
                await conn.execute(
                    sa.select(memories.c.id, memories.c.topic, memories.c.summary, memories.c.created_at)
                    .where(memories.c.tenant == tenant, memories.c.session_id == session_id)
                    .order_by(memories.c.created_at.desc())
                    .limit(limit)
                )
            ).all()
            found = (
                await conn.execute(
                    sa.select(
                        analyses.c.understanding,
                        analyses.c.gaps,
                        analyses.c.next_questions,
                        analyses.c.created_at,
                    )
                    .where(analyses.c.tenant == tenant, analyses.c.session_id == session_id)
                    .order_by(analyses.c.created_at.desc())
                    .limit(limit)
                )
            ).all()
        if not mems and not found:
            return None
        return {
            "session_id": session_id,
            "memories": [{"id": r[0], "topic": r[1], "summary": r[2], "created_at": r[3]} for r in mems],
            "analyses": [
                {"understanding": r[0], "gaps": r[1], "next_questions": r[2], "created_at": r[3]}
                for r in found
            ],
        }

    async def sessions(self, tenant: str) -> list[str]:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(memories.c.session_id)
                    .where(memories.c.tenant == tenant)
                    .distinct()
                    .union(sa.select(analyses.c.session_id).where(analyses.c.tenant == tenant).distinct())
                )
            ).all()
        return sorted(str(r[0]) for r in rows)

    async def recent_summaries(self, tenant: str, session_id: str, n: int = 3) -> list[str]:
        found = await self.session(tenant, session_id, limit=n)
        return [m["summary"] for m in (found or {}).get("memories", [])]

    async def record_costs(self, job_id: str, since: float, until: float) -> list[dict[str, Any]]:
        """Sum the usage of every learning job in [since, until) per tenant, once per stats job."""
        db = self._db
        query = (
            sa.select(
                usage.c.tenant,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0),
                sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0),
            )
            .select_from(usage.join(jobs, jobs.c.id == usage.c.job_id))
            .where(usage.c.ts >= since, usage.c.ts < until, jobs.c.kind.like("learning%"))
            .group_by(usage.c.tenant)
        )

        async def tx(conn: AsyncConnection) -> list[dict[str, Any]]:
            out = []
            for tenant, calls, tokens, cost in (await conn.execute(query)).all():
                row = {
                    "tenant": str(tenant),
                    "calls": int(calls),
                    "tokens": int(tokens),
                    "cost_usd": float(cost),
                }
                await conn.execute(
                    db.insert(cost_stats)
                    .values(job_id=job_id, period_start=since, period_end=until, **row)
                    .on_conflict_do_nothing(index_elements=["job_id", "tenant"])
                )
                out.append(row)
            return out

        return await db.transaction(tx)

    async def last_cost_period_end(self) -> float | None:
        async with self._db.read() as conn:
            value = (await conn.execute(sa.select(sa.func.max(cost_stats.c.period_end)))).scalar()
        return float(value) if value is not None else None

    async def cost_rows(self, tenant: str) -> list[dict[str, Any]]:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(cost_stats)
                    .where(cost_stats.c.tenant == tenant)
                    .order_by(cost_stats.c.period_end)
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    async def clean_up(self, cutoff: float) -> dict[str, int]:
        """Forget memories (and their vectors) and analyses older than `cutoff`."""

        async def tx(conn: AsyncConnection) -> dict[str, int]:
            old = sa.select(memories.c.id).where(memories.c.created_at < cutoff)
            gone_vectors = (await conn.execute(vectors.delete().where(vectors.c.memory_id.in_(old)))).rowcount
            gone_memories = (
                await conn.execute(memories.delete().where(memories.c.created_at < cutoff))
            ).rowcount
            gone_analyses = (
                await conn.execute(analyses.delete().where(analyses.c.created_at < cutoff))
            ).rowcount
            return {"memories": gone_memories, "vectors": gone_vectors, "analyses": gone_analyses}

        return await self._db.transaction(tx)
