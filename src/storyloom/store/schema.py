"""The one schema, written for SQLite and PostgreSQL alike (SQLAlchemy Core tables).

Timestamps are epoch seconds as doubles: the same type and arithmetic on both databases, no
time-zone surprises. Ids are short hex strings made by the application, so a submit needs no
round trip to learn its id. Migrations in `store/migrations/` create exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "api_keys",
    "checkpoints",
    "events",
    "job_signals",
    "jobs",
    "metadata",
    "schedules",
    "usage",
    "usage_daily",
]

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres wants a BIGINT identity.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Ts = sa.Double

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("parent_id", sa.String(32), nullable=True),
    sa.Column("depends_on", sa.String(32), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("run_at", _Ts, nullable=False),
    sa.Column("created_at", _Ts, nullable=False),
    sa.Column("updated_at", _Ts, nullable=False),
    sa.Column("started_at", _Ts, nullable=True),
    sa.Column("finished_at", _Ts, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", _Ts, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # A waiting job's condition ({"children": true} or {"signal": name}); NULL when not waiting.
    sa.Column("wait_for", sa.JSON, nullable=True),
    # Runs lost to a dead worker: not attempts (those count the job's own errors), bounded apart.
    sa.Column("lease_losses", sa.Integer, nullable=False, server_default="0"),
    # What the reaper knows of the recent deaths this job was in flight at (poison detection).
    sa.Column("loss_trail", sa.JSON, nullable=True),
    # Its step.delta events were merged, one per step, after it ended (jobs/compaction.py).
    sa.Column("deltas_compacted", sa.Boolean, nullable=False, server_default=sa.false()),
    # NULL keys are distinct on both databases, so jobs without a key never collide.
    sa.UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idem"),
    sa.Index("ix_jobs_lease", "lease_owner"),
    sa.Index("ix_jobs_parent", "parent_id"),
    sa.Index("ix_jobs_depends", "depends_on"),
    sa.Index("ix_jobs_finished", "finished_at"),
    # Per-tenant limits count a tenant's active jobs and its submissions of the last minute.
    sa.Index("ix_jobs_tenant_status", "tenant", "status"),
    sa.Index("ix_jobs_tenant_created", "tenant", "created_at"),
)

# In the claim's order (`jobs.queue`: priority DESC, run_at, created_at), so a claim reads the first
# runnable jobs instead of sorting all of them (migration 0006).
sa.Index("ix_jobs_claim", jobs.c.status, jobs.c.priority.desc(), jobs.c.run_at, jobs.c.created_at)

checkpoints = sa.Table(
    "job_checkpoints",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step", sa.String(300), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("created_at", _Ts, nullable=False),
)

events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("step", sa.String(300), nullable=True),
    sa.Column("ts", _Ts, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),
    # Never reuse the id of a deleted newest row: the event hub reads by id.
    sqlite_autoincrement=True,
)

# Signals sent to jobs (`JobQueue.signal`): kept whatever the job's state, the latest per name.
job_signals = sa.Table(
    "job_signals",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("payload", sa.JSON, nullable=True),
    sa.Column("ts", _Ts, nullable=False),
)

schedules = sa.Table(
    "job_schedules",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("interval_s", _Ts, nullable=False),
    sa.Column("next_run_at", _Ts, nullable=False),
    sa.Column("last_job_id", sa.String(32), nullable=True),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", _Ts, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("calls", sa.Integer, nullable=False, server_default="1"),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", _Ts, nullable=False, server_default="0"),
    # One row per model call (written by the worker as the call ends, with its step's path), so a
    # job's cost counts every call of every attempt, the judge's and the retried ones included.
    sa.Column("step", sa.String(300), nullable=True),
    sa.Column("cached_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_usage_ts", "ts"),
    sa.Index("ix_usage_job", "job_id"),
)

usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(100), primary_key=True),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", _Ts, nullable=False),
)

# API keys: only a SHA-256 of each key is kept (see store/keys.py); `id` is the key's public part.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", _Ts, nullable=False),
    sa.Column("revoked_at", _Ts, nullable=True),
    sa.Column("last_used_at", _Ts, nullable=True),
    sa.UniqueConstraint("key_hash", name="uq_api_keys_hash"),
    sa.Index("ix_api_keys_tenant", "tenant"),
)
