"""The learning system's tables: memories, analyses, memory vectors and cost statistics.

Every row names its tenant; a job that runs again (a killed worker) writes its row once
(unique on the job id, or on the memory for a vector)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["analyses", "cost_stats", "memories", "metadata", "vectors"]

metadata = sa.MetaData()

memories = sa.Table(
    "learning_memories",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False, unique=True),
    sa.Column("topic", sa.String(200), nullable=False, server_default=""),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_learning_memories_session", "tenant", "session_id", "created_at"),
)

analyses = sa.Table(
    "learning_analyses",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False, unique=True),
    sa.Column("understanding", sa.Integer, nullable=False),
    sa.Column("gaps", sa.JSON, nullable=False),
    sa.Column("next_questions", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_learning_analyses_session", "tenant", "session_id", "created_at"),
)

vectors = sa.Table(
    "learning_vectors",
    metadata,
    sa.Column("memory_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("dims", sa.Integer, nullable=False),
    sa.Column("vector", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_learning_vectors_tenant", "tenant"),
)

cost_stats = sa.Table(
    "learning_cost_stats",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("period_start", sa.Double, nullable=False),
    sa.Column("period_end", sa.Double, nullable=False),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Double, nullable=False),
    sa.UniqueConstraint("job_id", "tenant", name="uq_learning_cost_stats_run"),
)
