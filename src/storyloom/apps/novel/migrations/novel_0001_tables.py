"""the novel's tables: projects, chapters, chapter versions; its job kinds renamed

Revision ID: novel_0001
Revises: (none; the novel's own branch, version table alembic_version_novel)
Create Date: 2026-12-01 12:00:00

Databases made before apps had their own migrations already hold these tables (the engine's
first migration used to create them): they are kept as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "novel_0001"
down_revision = None
branch_labels = ("novel",)
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "projects" not in existing:
        _create_tables()
    # Job kinds are app-scoped now: a chapter is the novel app's main job, a book its `book` kind.
    op.execute("UPDATE jobs SET kind = 'novel' WHERE kind = 'chapter'")
    op.execute("UPDATE jobs SET kind = 'novel.book' WHERE kind = 'book'")


def _create_tables() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), server_default="default", nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("premise", sa.Text(), server_default="", nullable=False),
        sa.Column("outline", sa.Text(), server_default="", nullable=False),
        sa.Column("characters", sa.JSON(), nullable=False),
        sa.Column("style", sa.Text(), server_default="", nullable=False),
        sa.Column("genre", sa.String(length=100), server_default="", nullable=False),
        sa.Column("language", sa.String(length=8), server_default="zh", nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index("ix_projects_tenant", ["tenant"], unique=False)

    op.create_table(
        "chapters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), server_default="", nullable=False),
        sa.Column("outline", sa.Text(), server_default="", nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("current_version_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "index", name="uq_chapters_project_index"),
    )
    op.create_table(
        "chapter_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("chapter_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("chosen", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["chapter_id"], ["chapters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chapter_id", "job_id", "index", name="uq_chapter_versions_job_index"),
    )
    with op.batch_alter_table("chapter_versions", schema=None) as batch_op:
        batch_op.create_index("ix_chapter_versions_chapter", ["chapter_id"], unique=False)


def downgrade() -> None:
    op.drop_table("chapter_versions")
    op.drop_table("chapters")
    op.drop_table("projects")
