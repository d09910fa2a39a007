"""What a run hands back: every step's result, and what went wrong without failing the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Outcome", "RunResult", "RunStatus"]

RunStatus = Literal["completed", "degraded"]


@dataclass(slots=True)
class RunResult:
    """The result of one (sub-)flow run. Keys are step names (short), not paths.

    `errors` holds the failures that a FALLBACK or SKIP policy absorbed; a FAIL failure raises
    `StepFailedError` instead of returning. `status` is "degraded" when `errors` is not empty.
    `step_times` holds seconds for the steps that ran (restored steps did not run). A restored
    step brings back only its value: a step that fell back or was skipped in an earlier attempt
    is not in `errors` or `skipped` of the re-run.
    """

    run_id: str
    outputs: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    step_times: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> RunStatus:
        return "degraded" if self.errors else "completed"


@dataclass(slots=True, frozen=True)
class Outcome:
    """One fan-out branch: `value` is the branch's RunResult when `ok`, else `error` says why."""

    ok: bool
    value: RunResult | None = None
    error: Exception | None = None
