"""What a job handler receives: the job, its durable sink and checkpoints, the process's services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from storyloom.jobs.durable import DurableCheckpoints, JobEventSink
from storyloom.jobs.models import Job
from storyloom.jobs.queue import JobQueue
from storyloom.jobs.usage import usage_row
from storyloom.jobs.waits import WaitFor
from storyloom.llm.types import Usage

__all__ = ["Handler", "JobContext"]


@dataclass(slots=True)
class JobContext:
    """Passed to a handler. `run_id` is the job id, so a re-run restores the steps already done."""

    job: Job
    queue: JobQueue
    sink: JobEventSink
    checkpoints: DurableCheckpoints
    worker_id: str
    services: Any = None  # the process's shared services (model client, settings): runner.WorkerServices

    @property
    def run_id(self) -> str:
        return self.job.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    def emit(self, kind: str, **data: Any) -> None:
        self.sink.append(kind, data)

    def wait_for_children(self, *, timeout_s: float | None = None) -> WaitFor:
        """`raise ctx.wait_for_children()`: park this job, slot freed, until every child has ended."""
        return WaitFor(children=True, timeout_s=timeout_s)

    def wait_for_signal(self, name: str, *, timeout_s: float | None = None) -> WaitFor:
        """`raise ctx.wait_for_signal("choice")`: park this job until `queue.signal(id, name)`."""
        return WaitFor(signal=name, timeout_s=timeout_s)

    async def signals(self) -> dict[str, Any]:
        """Every signal this job has received: name -> latest payload."""
        return await self.queue.signals(self.job.id)

    def record_usage(
        self, *, step: str | None, model: str, usage: Usage, cost_usd: float, ts: float | None = None
    ) -> None:
        """One model call of this job, as a usage row committed with the run's next batch."""
        self.sink.writer.add_usage(
            usage_row(
                ts=time.time() if ts is None else ts,
                job_id=self.job.id,
                tenant=self.job.tenant,
                step=step,
                model=model,
                usage_=usage,
                cost_usd=cost_usd,
            )
        )


Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]
