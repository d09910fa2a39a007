"""the claim index in the claim's own order (status, priority DESC, run_at, created_at)

The claim picks `ORDER BY priority DESC, run_at, created_at`. The index was (status, priority,
run_at): ascending priority, so neither database could read the runnable jobs in that order and
each claim sorted every runnable job under the write lock, a cost that grew with the backlog
(SQLite, 20,000 runnable jobs: 6 ms per claim, 0.07 ms with this index).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index(
        "ix_jobs_claim", "jobs", ["status", sa.text("priority DESC"), "run_at", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "run_at"], unique=False)
