"""usage rows per model call: the step, cached prompt tokens, and an index by job

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("step", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("cached_tokens", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_usage_job", "usage", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_job", table_name="usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("cached_tokens")
        batch.drop_column("step")
