"""The book runner's tables (novel migration 0010): book runs and chapter staleness.

Kept apart from the novel's core tables (`apps/novel/tables.py`) so the data layer and the runner
can change without touching each other's columns.
"""

from __future__ import annotations

import sqlalchemy as sa

from storyloom.apps.novel.tables import metadata

__all__ = ["book_runs", "chapter_staleness"]

book_runs = sa.Table(
    "book_runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("book_id", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first", sa.Integer, nullable=False),
    sa.Column("last", sa.Integer, nullable=False),
    # The chapter in flight (or the next one to write); last + 1 once the run is done.
    sa.Column("chapter", sa.Integer, nullable=False),
    sa.Column("versions", sa.Integer, nullable=False),
    sa.Column("chooser", sa.String(8), nullable=False),
    sa.Column("only_stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cost_cap_usd", sa.Double, nullable=True),
    # Bumped by resume/choose: the next job's idempotency key differs from a finished one's.
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("job_id", sa.String(32), nullable=True),
    # {"<chapter>": {"cost_usd", "tokens", "cached_tokens", "elapsed_s", "job_id"}} per chapter done.
    sa.Column("progress", sa.JSON, nullable=False),
    sa.Column("stop_reason", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_book_runs_book", "book_id", "created_at"),
)

chapter_staleness = sa.Table(
    "chapter_staleness",
    metadata,
    sa.Column("chapter_id", sa.String(32), primary_key=True),
    sa.Column("book_id", sa.String(32), nullable=False),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("stale_reason", sa.Text, nullable=True),  # the text must be written again, and why
    sa.Column("memory_stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("memory_reason", sa.Text, nullable=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Index("ix_chapter_staleness_book", "book_id", "index"),
)
