"""Value objects of the queue: job status, a job row, a stored event, queue statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

__all__ = ["TERMINAL_EVENT_KINDS", "Job", "JobStatus", "QueueStats", "StoredEvent"]


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"  # failed, waits for `run_at` to run again
    WAITING = "waiting"  # parked by its handler (children / a signal): no lease, no worker slot
    COMPLETED = "completed"
    FAILED = "failed"  # dead letter: attempts exhausted or not retryable; `error` says why
    CANCELLED = "cancelled"

    TERMINAL: ClassVar[frozenset[JobStatus]]
    QUEUED: ClassVar[frozenset[JobStatus]]

    @property
    def is_terminal(self) -> bool:
        return self in JobStatus.TERMINAL


JobStatus.TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
JobStatus.QUEUED = frozenset({JobStatus.PENDING, JobStatus.RETRYING})

# Job-level event kinds written by the queue and the worker; a stream may end after a terminal one.
TERMINAL_EVENT_KINDS = frozenset({"job.completed", "job.failed", "job.cancelled"})


@dataclass(slots=True)
class Job:
    id: str
    kind: str
    status: JobStatus
    priority: int
    tenant: str
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    idempotency_key: str | None
    parent_id: str | None
    depends_on: str | None
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    cancel_requested: bool
    wait_for: dict[str, Any] | None = None  # while WAITING: {"children": True} or {"signal": name}
    lease_losses: int = 0  # runs lost to a dead worker (not attempts)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Any) -> Job:
        """From a column -> value mapping (a row's `_mapping`, or `store.bulk.jobs_by_ids`)."""
        return cls(
            id=m["id"],
            kind=m["kind"],
            status=JobStatus(m["status"]),
            priority=int(m["priority"]),
            tenant=m["tenant"],
            payload=m["payload"] or {},
            result=m["result"],
            error=m["error"],
            idempotency_key=m["idempotency_key"],
            parent_id=m["parent_id"],
            depends_on=m["depends_on"],
            attempts=int(m["attempts"]),
            max_attempts=int(m["max_attempts"]),
            run_at=float(m["run_at"]),
            created_at=float(m["created_at"]),
            updated_at=float(m["updated_at"]),
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            lease_owner=m["lease_owner"],
            lease_expires_at=m["lease_expires_at"],
            cancel_requested=bool(m["cancel_requested"]),
            wait_for=m.get("wait_for"),
            lease_losses=int(m.get("lease_losses") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One entry of a job's event log. `seq` is the per-job offset (SSE `id:`); `id` is global."""

    id: int
    job_id: str
    seq: int
    kind: str
    step: str | None
    ts: float
    data: dict[str, Any] = field(default_factory=dict)
    # A reader's encoded form of this event (the API's SSE frame), made by the first reader and
    # shared by every other reader of this object: one hub poll hands one object to all the
    # streams of its job, so 10 watchers of a job cost one encoding, not ten. Not part of the
    # event (not compared, not copied by `dataclasses.replace`, which makes a new event).
    encoded: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @classmethod
    def from_tuple(cls, row: tuple[int, str, int, str, str | None, float, Any]) -> StoredEvent:
        """From `store.bulk.select_events`."""
        return cls(
            id=row[0], job_id=row[1], seq=row[2], kind=row[3], step=row[4], ts=row[5], data=row[6] or {}
        )

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "step": self.step, "ts": self.ts, "data": self.data}


@dataclass(frozen=True, slots=True)
class QueueStats:
    counts: dict[str, int]  # per status value, every status present (0 when none)
    queued: int  # pending + retrying
    due: int  # queued jobs whose run_at has passed (the backlog workers can take now)
    running: int
    oldest_due_age_s: float  # how long the oldest due job has waited; 0 when none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
