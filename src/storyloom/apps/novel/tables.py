"""The novel's tables (its own metadata; created by its own migrations in `migrations/`)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "chapter_memory",
    "chapter_versions",
    "chapters",
    "metadata",
    "projects",
    "story_bibles",
    "story_outlines",
]

metadata = sa.MetaData()

_Ts = sa.Double

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, server_default="default"),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("premise", sa.Text, nullable=False, server_default=""),
    sa.Column("outline", sa.Text, nullable=False, server_default=""),
    sa.Column("characters", sa.JSON, nullable=False),
    sa.Column("style", sa.Text, nullable=False, server_default=""),
    sa.Column("genre", sa.String(100), nullable=False, server_default=""),
    sa.Column("language", sa.String(8), nullable=False, server_default="zh"),
    sa.Column("created_at", _Ts, nullable=False),
    sa.Column("updated_at", _Ts, nullable=False),
    sa.Index("ix_projects_tenant", "tenant"),
)

chapters = sa.Table(
    "chapters",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("title", sa.String(300), nullable=False, server_default=""),
    sa.Column("outline", sa.Text, nullable=False, server_default=""),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("current_version_id", sa.String(32), nullable=True),
    sa.Column("created_at", _Ts, nullable=False),
    sa.Column("updated_at", _Ts, nullable=False),
    sa.UniqueConstraint("project_id", "index", name="uq_chapters_project_index"),
)

chapter_versions = sa.Table(
    "chapter_versions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("chapter_id", sa.String(32), sa.ForeignKey("chapters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=True),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False),
    sa.Column("chosen", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", _Ts, nullable=False),
    # A re-run of the same job overwrites its own versions instead of adding more.
    sa.UniqueConstraint("chapter_id", "job_id", "index", name="uq_chapter_versions_job_index"),
    sa.Index("ix_chapter_versions_chapter", "chapter_id"),
)

# -- the book (novel_0003): versioned bible and outline, memory per chapter ---------------------

story_bibles = sa.Table(
    "story_bibles",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("bible", sa.JSON, nullable=False),
    sa.Column("source", sa.String(16), nullable=False, server_default="edited"),
    sa.Column("created_at", _Ts, nullable=False),
    sa.UniqueConstraint("project_id", "version", name="uq_story_bibles_project_version"),
)

story_outlines = sa.Table(
    "story_outlines",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("outline", sa.JSON, nullable=False),
    sa.Column("coverage", sa.JSON, nullable=True),
    sa.Column("created_at", _Ts, nullable=False),
    sa.UniqueConstraint("project_id", "version", name="uq_story_outlines_project_version"),
)

chapter_memory = sa.Table(
    "chapter_memory",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("chapter_id", sa.String(32), sa.ForeignKey("chapters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("version_id", sa.String(32), nullable=True),  # the chosen chapter version it was read from
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("memory", sa.JSON, nullable=False),
    sa.Column("created_at", _Ts, nullable=False),
    sa.UniqueConstraint("chapter_id", "revision", name="uq_chapter_memory_chapter_revision"),
    sa.Index("ix_chapter_memory_project_number", "project_id", "number"),
)
