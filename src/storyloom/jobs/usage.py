"""A job's usage: the rows its model calls wrote, summed (every attempt's calls count).

Tool calls write rows too (`model` = `tool:<name>`, no tokens); they are counted apart as
`tool_calls`, so `calls` stays the number of model calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from storyloom.llm.types import Usage
from storyloom.store.database import Database
from storyloom.store.schema import usage

__all__ = ["JobUsage", "job_usage", "usage_row"]


@dataclass(slots=True)
class JobUsage:
    calls: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    tool_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        u = self.usage
        return {
            "calls": self.calls,
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "cached_tokens": u.cached_tokens,
            "total_tokens": u.total_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "cache_hit_share": round(u.cached_tokens / u.prompt_tokens, 4) if u.prompt_tokens else 0.0,
            "tool_calls": self.tool_calls,
        }


def usage_row(
    *,
    ts: float,
    job_id: str | None,
    tenant: str,
    step: str | None,
    model: str,
    usage_: Usage,
    cost_usd: float,
) -> dict[str, Any]:
    return {
        "ts": ts,
        "job_id": job_id,
        "tenant": tenant,
        "step": step,
        "model": model,
        "calls": 1,
        "prompt_tokens": usage_.prompt_tokens,
        "completion_tokens": usage_.completion_tokens,
        "cached_tokens": usage_.cached_tokens,
        "cost_usd": cost_usd,
    }


_IS_TOOL = usage.c.model.like("tool:%")
# Built once, with an expanding parameter: a per-call `in_(list)` leaves a reference cycle in
# SQLAlchemy's clones for every job (see jobs.queue).
_USAGE_OF_JOBS = (
    sa.select(
        usage.c.job_id,
        sa.func.sum(sa.case((_IS_TOOL, 0), else_=usage.c.calls)),
        sa.func.sum(sa.case((_IS_TOOL, usage.c.calls), else_=0)),
        sa.func.sum(usage.c.prompt_tokens),
        sa.func.sum(usage.c.completion_tokens),
        sa.func.sum(usage.c.cached_tokens),
        sa.func.sum(usage.c.cost_usd),
    )
    .where(usage.c.job_id.in_(sa.bindparam("ids", expanding=True)))
    .group_by(usage.c.job_id)
)


async def job_usage(db: Database, job_ids: list[str]) -> dict[str, JobUsage]:
    """Each job's summed usage (jobs without a call get zeros)."""
    out = {job_id: JobUsage() for job_id in job_ids}
    if not job_ids:
        return out
    async with db.read() as conn:
        for job_id, calls, tool_calls, pt, ct, cached, cost in await conn.execute(
            _USAGE_OF_JOBS, {"ids": job_ids}
        ):
            out[job_id] = JobUsage(
                int(calls or 0),
                Usage(int(pt or 0), int(ct or 0), int(cached or 0)),
                float(cost or 0.0),
                int(tool_calls or 0),
            )
    return out
