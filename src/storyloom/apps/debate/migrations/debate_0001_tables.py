"""the debate's tables: conversations and their messages

Revision ID: debate_0001
Revises: (none; the debate's own branch, version table alembic_version_debate)
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "debate_0001"
down_revision = None
branch_labels = ("debate",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "debate_conversations",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), server_default="", nullable=False),
        sa.Column("summarized_upto", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id"),
    )
    op.create_table(
        "debate_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "conversation_id", "job_id", "role", name="uq_debate_messages_turn"),
    )
    op.create_index("ix_debate_messages_conversation", "debate_messages", ["tenant", "conversation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_debate_messages_conversation", table_name="debate_messages")
    op.drop_table("debate_messages")
    op.drop_table("debate_conversations")
