"""The seams of the flow engine: events out, checkpoints in and out.

The engine emits `Event`s into an `EventSink` and persists each finished step through a
`CheckpointStore`. In memory both are trivial; the service makes them durable (`store/`), so a
re-run of the same run id skips the steps that already finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["CheckpointStore", "Event", "EventKind", "EventSink"]


class EventKind:
    """Event kinds the engine emits. Applications may emit their own kinds too."""

    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    STEP_STARTED = "step.started"
    STEP_DELTA = "step.delta"  # data: {"text": coalesced text since the last delta of this step}
    STEP_FINISHED = "step.finished"  # data: {"elapsed_s": float}
    STEP_FAILED = "step.failed"  # data: {"error": str, "policy": "fail" | "fallback" | "skip"}
    STEP_SKIPPED = "step.skipped"
    STEP_RESTORED = "step.restored"  # the step's result came from a checkpoint; it did not run


@dataclass(slots=True)
class Event:
    run_id: str
    kind: str
    step: str | None  # the step's full path, e.g. "versions/v2/plot"; None for run-level events
    ts: float  # time.time() when the event happened (not when it was stored)
    data: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class EventSink(Protocol):
    """Receives events in order. `emit` must not block: durable sinks buffer and flush."""

    def emit(self, event: Event) -> None: ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Finished step results of a run, keyed by step path. Values are JSON-compatible."""

    async def load(self, run_id: str) -> dict[str, Any]:
        """Every finished step of the run (one read at the start of a run)."""
        ...

    async def save(self, run_id: str, step: str, value: Any) -> None:
        """Return only once the value is durable: dependents start after this."""
        ...
