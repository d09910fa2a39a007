"""the book runner: book runs (a chain of chapter jobs) and chapter staleness

Revision ID: novel_0010
Revises: novel_0003
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "novel_0010"
down_revision = "novel_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "book_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("book_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first", sa.Integer(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.Column("chapter", sa.Integer(), nullable=False),
        sa.Column("versions", sa.Integer(), nullable=False),
        sa.Column("chooser", sa.String(length=8), nullable=False),
        sa.Column("only_stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("cost_cap_usd", sa.Double(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_book_runs_book", "book_runs", ["book_id", "created_at"])
    op.create_table(
        "chapter_staleness",
        sa.Column("chapter_id", sa.String(length=32), nullable=False),
        sa.Column("book_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("stale_reason", sa.Text(), nullable=True),
        sa.Column("memory_stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("memory_reason", sa.Text(), nullable=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("chapter_id"),
    )
    op.create_index("ix_chapter_staleness_book", "chapter_staleness", ["book_id", "index"])


def downgrade() -> None:
    op.drop_table("chapter_staleness")
    op.drop_table("book_runs")
