"""Turn store and queue records into response bodies."""

from __future__ import annotations

from storyloom.api.schemas import DegradedOut, JobOut, UsageOut
from storyloom.jobs.models import Job
from storyloom.jobs.usage import JobUsage

__all__ = ["execution_time", "job_out"]


_ENVELOPE = frozenset({"result", "text", "usage", "degraded"})


def job_out(job: Job, usage: JobUsage | None = None, *, app: str | None = None) -> JobOut:
    """The job as the API shows it; an app job's result envelope is spread into its fields, and
    `usage` (the job's usage rows, summed) gives tokens and cost while it runs."""
    raw = job.result
    envelope = raw if isinstance(raw, dict) and raw.keys() >= _ENVELOPE else None
    totals = usage.to_dict() if usage is not None else (envelope or {}).get("usage") or {}
    return JobOut(
        id=job.id,
        kind=job.kind,
        app=app,
        status=job.status.value,
        priority=job.priority,
        tenant=job.tenant,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        lease_losses=job.lease_losses,
        wait_for=job.wait_for,
        idempotency_key=job.idempotency_key,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        result=envelope["result"] if envelope is not None else raw,
        text=envelope["text"] if envelope is not None else None,
        usage=UsageOut.model_validate(totals),
        cost_usd=float(totals.get("cost_usd") or 0.0),
        degraded=[DegradedOut.model_validate(d) for d in (envelope or {}).get("degraded") or []],
        events_url=f"/api/jobs/{job.id}/events",
    )


def execution_time(job: Job) -> float | None:
    if job.finished_at is None:
        return None
    return round(job.finished_at - (job.started_at or job.created_at), 3)
