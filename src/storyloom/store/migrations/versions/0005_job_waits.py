"""jobs that wait without a slot (wait_for, job_signals) and lease losses counted apart from attempts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("wait_for", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("lease_losses", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("loss_trail", sa.JSON(), nullable=True))
    op.create_table(
        "job_signals",
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("job_signals")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("loss_trail")
        batch.drop_column("lease_losses")
        batch.drop_column("wait_for")
