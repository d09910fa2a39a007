"""How many workers are alive, as far as the API can tell.

When the API runs in the same process as the supervisor (`storyloom serve`), the supervisor's own
count is passed in as `ApiOptions.worker_count`. A stand-alone API process (scale-out) only sees the
database: workers holding unexpired leases are certainly alive; idle ones leave no trace there.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from storyloom.jobs.models import JobStatus
from storyloom.store.database import Database
from storyloom.store.schema import jobs

__all__ = ["busy_workers"]


async def busy_workers(db: Database) -> int:
    """Distinct workers holding a live lease on a running job."""
    query = sa.select(sa.func.count(sa.distinct(jobs.c.lease_owner))).where(
        jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at > time.time()
    )
    async with db.read() as conn:
        return int(await conn.scalar(query) or 0)
