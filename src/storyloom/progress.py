"""A live view of any app's run: one row per step, its state, time, streamed tokens, degradation.

Fed with the job's events (anything with `kind`, `step`, `data`), so it works for every app the
same way; on a terminal it is a rich live table, elsewhere one plain line per finished step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from storyloom.llm.tokens import estimate_tokens

__all__ = ["EventView", "LiveSteps", "PlainSteps", "StepBoard"]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class EventView(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def step(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class StepRow:
    path: str
    state: str = "running"  # running, done, degraded, failed, skipped, restored
    started: float = 0.0
    elapsed: float = 0.0
    tokens: int = 0
    note: str = ""

    def cells(self, now: float) -> tuple[Text, Text, str, str]:
        styles = {
            "running": "yellow",
            "done": "green",
            "degraded": "magenta",
            "failed": "red",
            "skipped": "dim",
            "restored": "cyan",
        }
        icon = {"done": "✓", "degraded": "!", "failed": "✗", "skipped": "–", "restored": "↺"}.get(
            self.state, _SPINNER[int(now * 10) % len(_SPINNER)]
        )
        seconds = now - self.started if self.state == "running" else self.elapsed
        return (
            Text(f"{icon} {self.state}", style=styles.get(self.state, "")),
            Text(self.path),
            f"{seconds:.1f}s",
            f"{self.tokens}t" + (f"  {self.note}" if self.note else ""),
        )


class StepBoard:
    """The state both views share; `apply` returns the row that just ended, if one did."""

    def __init__(self) -> None:
        self.rows: dict[str, StepRow] = {}
        self.started = time.monotonic()
        self.status = "running"

    def apply(self, event: EventView) -> StepRow | None:
        kind, step, data = event.kind, event.step, event.data
        if kind.startswith("job."):
            self.status = kind.removeprefix("job.")
            return None
        if step is None:
            return None
        now = time.monotonic()
        row = self.rows.get(step)
        if row is None:
            row = self.rows[step] = StepRow(step, started=now)
        if kind == "step.started":
            row.state, row.started = "running", now
        elif kind == "step.delta":
            row.tokens += estimate_tokens(str(data.get("text", "")))
        elif kind == "step.degraded":
            row.state, row.note = "degraded", str(data.get("reason", ""))
        elif kind == "step.finished":
            row.elapsed = float(data.get("elapsed_s", now - row.started))
            row.state = "degraded" if row.state == "degraded" else "done"
            return row
        elif kind == "step.failed":
            row.state, row.elapsed, row.note = "failed", now - row.started, str(data.get("error", ""))
            return row
        elif kind == "step.skipped":
            row.state = "skipped"
            return row
        elif kind == "step.restored":
            row.state = "restored"
            return row
        return None


class LiveSteps:
    """A rich live table (a context manager; `emit` takes events)."""

    def __init__(self, title: str, *, console: Console | None = None) -> None:
        self.board = StepBoard()
        self._title = title
        self._live = Live(
            console=console or Console(stderr=True), get_renderable=self._render, refresh_per_second=8
        )

    def emit(self, event: EventView) -> None:
        self.board.apply(event)

    def __enter__(self) -> LiveSteps:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()

    def _render(self) -> Table:
        now = time.monotonic()
        table = Table(
            title=f"{self._title} · {self.board.status} · {now - self.board.started:.1f}s",
            title_justify="left",
            box=None,
            padding=(0, 1),
        )
        for name in ("state", "step", "time", "tokens"):
            table.add_column(name, no_wrap=name != "tokens")
        for row in self.board.rows.values():
            table.add_row(*row.cells(now))
        return table


class PlainSteps:
    """One line per step that ended: for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.board = StepBoard()
        self._stream = stream

    def emit(self, event: EventView) -> None:
        row = self.board.apply(event)
        if row is None:
            return
        note = f" ({row.note})" if row.note else ""
        print(
            f"[{time.monotonic() - self.board.started:6.1f}s] {row.path}: {row.state} "
            f"{row.elapsed:.1f}s {row.tokens} tok{note}",
            file=self._stream,
            flush=True,
        )

    def __enter__(self) -> PlainSteps:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
