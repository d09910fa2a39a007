"""the book: versioned story bibles and outlines, story memory per chapter

Revision ID: novel_0003
Revises: novel_0001
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "novel_0003"
down_revision = "novel_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "story_bibles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("bible", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), server_default="edited", nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "version", name="uq_story_bibles_project_version"),
    )
    op.create_table(
        "story_outlines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("outline", sa.JSON(), nullable=False),
        sa.Column("coverage", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "version", name="uq_story_outlines_project_version"),
    )
    op.create_table(
        "chapter_memory",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("chapter_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("memory", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["chapter_id"], ["chapters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chapter_id", "revision", name="uq_chapter_memory_chapter_revision"),
    )
    with op.batch_alter_table("chapter_memory", schema=None) as batch_op:
        batch_op.create_index("ix_chapter_memory_project_number", ["project_id", "number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chapter_memory", schema=None) as batch_op:
        batch_op.drop_index("ix_chapter_memory_project_number")
    op.drop_table("chapter_memory")
    op.drop_table("story_outlines")
    op.drop_table("story_bibles")
