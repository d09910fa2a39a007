"""Showing a chapter run as it happens: a live table on a terminal, plain lines anywhere else.

Both are event sinks fed by the flow engine. The table's cells are all created up front and only
their fields change afterwards, because rich refreshes from its own thread while the event loop
updates them (no dict ever changes size under the renderer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from storyloom.flow import Event, EventKind
from storyloom.llm.tokens import estimate_tokens

__all__ = ["COLUMNS", "ChapterDisplay", "PlainProgress", "locate"]

COLUMNS = ("plot", "character", "scene", "synthesis", "optimize", "quality", "revise")
_HEADERS = ("plot", "char", "scene", "draft", "polish", "check", "revise")
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def locate(step: str | None) -> tuple[str, str] | None:
    """(row, column) of a step path: director/judge rows, and one row per version."""
    if step is None:
        return None
    if step in ("director", "judge"):
        return step, step
    parts = step.split("/")
    if len(parts) >= 3 and parts[0] == "versions":
        column = parts[2]
        if column in COLUMNS:
            return parts[1], column
    return None


@dataclass(slots=True)
class _Cell:
    state: str = "waiting"  # waiting, running, done, degraded, failed, skipped, restored
    started: float = 0.0
    elapsed: float = 0.0
    tokens: int = 0
    rounds: int = 0  # revise: rounds started
    reason: str = ""  # degraded: why the output is not the model's own

    def render(self, now: float) -> Text:
        """Compact enough for 80 columns: running shows streamed tokens, done shows seconds."""
        r = f"r{self.rounds} " if self.rounds else ""
        if self.state == "waiting":
            return Text("·", style="dim")
        if self.state == "running":
            spin = _SPINNER[int(now * 10) % len(_SPINNER)]
            return Text(f"{spin}{r}{_short(self.tokens)}t {now - self.started:.1f}s", style="yellow")
        if self.state == "failed":
            return Text(f"✗ {self.elapsed:.1f}s", style="red")
        if self.state == "skipped":
            return Text("– skip", style="dim")
        if self.state == "restored":
            return Text("↺ saved", style="cyan")
        if self.state == "degraded":
            return Text(f"!{r}{self.elapsed:.1f}s", style="magenta")
        return Text(f"✓{r}{self.elapsed:.1f}s", style="green")


def _short(tokens: int) -> str:
    return f"{tokens / 1000:.1f}k" if tokens >= 1000 else str(tokens)


class _Board:
    """The state every display shares: one cell per (row, column)."""

    def __init__(self, versions: int) -> None:
        self.rows = ["director", *(f"v{i + 1}" for i in range(versions)), "judge"]
        self.cells: dict[tuple[str, str], _Cell] = {
            ("director", "director"): _Cell(),
            ("judge", "judge"): _Cell(),
        }
        for row in self.rows[1:-1]:
            for col in COLUMNS:
                self.cells[(row, col)] = _Cell()
        self.started = time.monotonic()

    def apply(self, event: Event) -> tuple[str, str, _Cell] | None:
        """Update the board; returns the cell that finished, failed or was skipped, if one did."""
        where = locate(event.step)
        if where is None:
            return None
        cell = self.cells.get(where)
        if cell is None:
            return None
        revise_inner = where[1] == "revise" and event.step is not None and event.step.count("/") > 2
        kind = event.kind
        now = time.monotonic()
        if kind == EventKind.STEP_STARTED:
            if revise_inner and event.step is not None and event.step.endswith("/revise"):
                cell.rounds = int(event.step.split("/")[3][1:])  # versions/v1/revise/r2/revise → 2
            if cell.state != "running":
                cell.state, cell.started = "running", now
        elif kind == EventKind.STEP_DELTA:
            cell.tokens += estimate_tokens(str(event.data.get("text", "")))
        elif revise_inner:
            return None  # the loop step itself reports the end of the revise column
        elif kind == "step.degraded":
            cell.state, cell.reason = "degraded", str(event.data.get("reason", ""))
        elif kind == EventKind.STEP_FINISHED:
            elapsed = float(event.data.get("elapsed_s", now - cell.started))
            cell.state, cell.elapsed = ("degraded" if cell.state == "degraded" else "done"), elapsed
            return (*where, cell)
        elif kind == EventKind.STEP_FAILED:
            cell.state, cell.elapsed = "failed", (now - cell.started) if cell.started else 0.0
            return (*where, cell)
        elif kind == EventKind.STEP_SKIPPED:
            cell.state = "skipped"
            return (*where, cell)
        elif kind == EventKind.STEP_RESTORED:
            cell.state = "restored"
        return None


class ChapterDisplay:
    """A live table of every agent of every version (a context manager and an event sink)."""

    def __init__(self, versions: int, *, console: Console | None = None) -> None:
        self._board = _Board(versions)
        self._console = console or Console(stderr=True)
        self._live = Live(
            console=self._console, get_renderable=self._render, refresh_per_second=8, transient=False
        )

    def emit(self, event: Event) -> None:
        self._board.apply(event)

    def __enter__(self) -> ChapterDisplay:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()

    def _render(self) -> Table:
        now = time.monotonic()
        board = self._board
        table = Table(
            title=f"storyloom · {now - board.started:.1f}s",
            title_justify="left",
            expand=False,
            box=None,
            padding=(0, 1),
            header_style="bold",
        )
        table.add_column("", no_wrap=True)
        for col in _HEADERS:
            table.add_column(col, no_wrap=True)
        for row in board.rows:
            if row in ("director", "judge"):  # one agent each: its cell under the first column
                label = "plan" if row == "director" else row
                table.add_row(label, board.cells[(row, row)].render(now), *([""] * (len(COLUMNS) - 1)))
            else:
                table.add_row(row, *(board.cells[(row, c)].render(now) for c in COLUMNS))
        return table


class PlainProgress:
    """One line per finished, failed or skipped agent: for CI logs and pipes (no cursor tricks)."""

    def __init__(self, versions: int, stream: TextIO) -> None:
        self._board = _Board(versions)
        self._stream = stream

    def emit(self, event: Event) -> None:
        changed = self._board.apply(event)
        if changed is None:
            return
        row, col, cell = changed
        name = row if row == col else f"{row} {col}"
        detail = (
            "skipped" if cell.state == "skipped" else f"{cell.state} {cell.elapsed:.1f}s {cell.tokens} tok"
        )
        if cell.state == "failed":
            detail += f" ({event.data.get('error', '')})"
        elif cell.state == "degraded":
            detail += f" ({cell.reason})"
        print(
            f"[{time.monotonic() - self._board.started:6.1f}s] {name}: {detail}",
            file=self._stream,
            flush=True,
        )

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
