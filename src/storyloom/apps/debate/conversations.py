"""`ConversationStore`: a tenant's conversations and their turns, in the debate's own tables.

Every read and write names the tenant, so one tenant's session id never reaches another's
messages. Appending a turn is idempotent per job (a job run again after a killed worker writes its
user message and answer once), and the running summary of a long conversation is kept beside it
so each new message summarizes only what is new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from storyloom.apps.debate.tables import conversations, messages
from storyloom.store.database import Database

__all__ = ["Conversation", "ConversationStore", "StoredTurn"]


@dataclass(frozen=True, slots=True)
class StoredTurn:
    role: str
    content: str
    job_id: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    summary: str
    summarized_upto: int
    turns: list[StoredTurn]
    created_at: float
    updated_at: float


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(
        self, tenant: str, session_id: str, *, before_job: str | None = None
    ) -> Conversation | None:
        """The conversation, with its turns in order; `before_job`: without that job's own turns."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(conversations).where(
                        conversations.c.tenant == tenant, conversations.c.id == session_id
                    )
                )
            ).first()
            if row is None:
                return None
            query = (
                sa.select(messages.c.role, messages.c.content, messages.c.job_id, messages.c.created_at)
                .where(messages.c.tenant == tenant, messages.c.conversation_id == session_id)
                .order_by(messages.c.id)
            )
            if before_job is not None:
                query = query.where(messages.c.job_id != before_job)
            turns = [
                StoredTurn(str(r[0]), str(r[1]), str(r[2]), float(r[3]))
                for r in (await conn.execute(query)).all()
            ]
        return Conversation(
            id=session_id,
            summary=str(row.summary),
            summarized_upto=int(row.summarized_upto),
            turns=turns,
            created_at=float(row.created_at),
            updated_at=float(row.updated_at),
        )

    async def list(self, tenant: str, *, limit: int = 50) -> list[tuple[str, float, int]]:
        """(id, updated_at, message count) of the tenant's newest conversations."""
        count = (
            sa.select(sa.func.count())
            .where(messages.c.tenant == tenant, messages.c.conversation_id == conversations.c.id)
            .scalar_subquery()
        )
        query = (
            sa.select(conversations.c.id, conversations.c.updated_at, count)
            .where(conversations.c.tenant == tenant)
            .order_by(conversations.c.updated_at.desc())
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [(str(r[0]), float(r[1]), int(r[2])) for r in (await conn.execute(query)).all()]

    async def append_turn(self, tenant: str, session_id: str, job_id: str, user: str, answer: str) -> None:
        """The user's message and the answer, once per job, creating the conversation if new."""
        now = time.time()
        db = self._db

        async def tx(conn: AsyncConnection) -> None:
            await _ensure(db, conn, tenant, session_id, now)
            for role, content in (("user", user), ("assistant", answer)):
                await conn.execute(
                    db.insert(messages)
                    .values(
                        tenant=tenant,
                        conversation_id=session_id,
                        job_id=job_id,
                        role=role,
                        content=content,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["tenant", "conversation_id", "job_id", "role"])
                )
            await conn.execute(
                conversations.update()
                .where(conversations.c.tenant == tenant, conversations.c.id == session_id)
                .values(updated_at=now)
            )

        await db.transaction(tx)

    async def save_summary(self, tenant: str, session_id: str, summary: str, upto: int) -> None:
        """Keep a newer summary only: two messages racing never move it backwards."""
        now = time.time()
        db = self._db

        async def tx(conn: AsyncConnection) -> None:
            await _ensure(db, conn, tenant, session_id, now)
            await conn.execute(
                conversations.update()
                .where(
                    conversations.c.tenant == tenant,
                    conversations.c.id == session_id,
                    conversations.c.summarized_upto < upto,
                )
                .values(summary=summary, summarized_upto=upto, updated_at=now)
            )

        await db.transaction(tx)

    async def delete_older_than(self, cutoff: float) -> int:
        """Forget conversations idle since `cutoff` (seed 003's clean-up of finished sessions)."""
        db = self._db

        async def tx(conn: AsyncConnection) -> int:
            old = sa.select(conversations.c.tenant, conversations.c.id).where(
                conversations.c.updated_at < cutoff
            )
            rows = (await conn.execute(old)).all()
            for tenant, cid in rows:
                await conn.execute(
                    messages.delete().where(messages.c.tenant == tenant, messages.c.conversation_id == cid)
                )
                await conn.execute(
                    conversations.delete().where(conversations.c.tenant == tenant, conversations.c.id == cid)
                )
            return len(rows)

        return await db.transaction(tx)


async def _ensure(db: Database, conn: AsyncConnection, tenant: str, session_id: str, now: float) -> None:
    await conn.execute(
        db.insert(conversations)
        .values(tenant=tenant, id=session_id, summary="", summarized_upto=0, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["tenant", "id"])
    )
