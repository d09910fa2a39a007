"""What a job handler receives: the job, its durable sink and checkpoints, the process's services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from storyloom.jobs.durable import DurableCheckpoints, JobEventSink
from storyloom.jobs.models import Job
from storyloom.jobs.queue import JobQueue

__all__ = ["Handler", "JobContext"]


@dataclass(slots=True)
class JobContext:
    """Passed to a handler. `run_id` is the job id, so a re-run restores the steps already done."""

    job: Job
    queue: JobQueue
    sink: JobEventSink
    checkpoints: DurableCheckpoints
    worker_id: str
    services: Any = None  # the process's shared services (model client, settings), set by app.py

    @property
    def run_id(self) -> str:
        return self.job.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    def emit(self, kind: str, **data: Any) -> None:
        self.sink.append(kind, data)


Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]
