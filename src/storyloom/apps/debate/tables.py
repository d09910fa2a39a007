"""The debate's tables: conversations (one per tenant and session id) and their messages."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["conversations", "messages", "metadata"]

metadata = sa.MetaData()

conversations = sa.Table(
    "debate_conversations",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    # How many of the conversation's first messages `summary` stands for.
    sa.Column("summarized_upto", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

messages = sa.Table(
    "debate_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("conversation_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # A job that runs again (a killed worker) writes its turn once.
    sa.UniqueConstraint("tenant", "conversation_id", "job_id", "role", name="uq_debate_messages_turn"),
    sa.Index("ix_debate_messages_conversation", "tenant", "conversation_id", "id"),
)
