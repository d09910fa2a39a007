"""the learning system's tables: memories, analyses, vectors, cost statistics

Revision ID: learning_0001
Revises: (none; the learning app's own branch, version table alembic_version_learning)
Create Date: 2026-12-02 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "learning_0001"
down_revision = None
branch_labels = ("learning",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learning_memories",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=200), server_default="", nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    op.create_index(
        "ix_learning_memories_session", "learning_memories", ["tenant", "session_id", "created_at"]
    )
    op.create_table(
        "learning_analyses",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("understanding", sa.Integer(), nullable=False),
        sa.Column("gaps", sa.JSON(), nullable=False),
        sa.Column("next_questions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    op.create_index(
        "ix_learning_analyses_session", "learning_analyses", ["tenant", "session_id", "created_at"]
    )
    op.create_table(
        "learning_vectors",
        sa.Column("memory_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id"),
    )
    op.create_index("ix_learning_vectors_tenant", "learning_vectors", ["tenant"])
    op.create_table(
        "learning_cost_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.Double(), nullable=False),
        sa.Column("period_end", sa.Double(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "tenant", name="uq_learning_cost_stats_run"),
    )


def downgrade() -> None:
    for name in ("learning_cost_stats", "learning_vectors", "learning_analyses", "learning_memories"):
        op.drop_table(name)
