"""In-memory checkpoint store and event sinks, for tests, benchmarks and the CLI."""

from __future__ import annotations

import copy
from typing import Any

from storyloom.flow.types import Event

__all__ = ["ListSink", "MemoryCheckpoints", "NullSink"]


class MemoryCheckpoints:
    """A `CheckpointStore` in a dict. Values are deep-copied in and out, like a real store would."""

    __slots__ = ("runs", "saves")

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.saves = 0

    async def load(self, run_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.runs.get(run_id, {}))

    async def save(self, run_id: str, step: str, value: Any) -> None:
        self.saves += 1
        self.runs.setdefault(run_id, {})[step] = copy.deepcopy(value)


class ListSink:
    """Collects every event in order."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self, step: str | None = None) -> list[str]:
        """Event kinds in order, optionally only those of one step path."""
        return [e.kind for e in self.events if step is None or e.step == step]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class NullSink:
    """Drops every event; `run_flow` recognises it and skips building events at all."""

    __slots__ = ()

    def emit(self, event: Event) -> None:
        return None
