"""Token deltas coalesced into few `step.delta` events, so a thousand streams do not flood a sink.

One timer per run (not per step): the first delta after a quiet period arms it; when it fires,
every step's pending text goes out as one event per step. A step's pending text is also flushed
before any other event of that step, so consumers see deltas, then finished, in order.
"""

from __future__ import annotations

import asyncio
import time

from storyloom.flow.types import Event, EventKind, EventSink

__all__ = ["DeltaCoalescer"]


class DeltaCoalescer:
    __slots__ = ("_handle", "_interval_s", "_loop", "_pending", "_run_id", "_sink")

    def __init__(self, sink: EventSink, run_id: str, interval_s: float) -> None:
        self._sink = sink
        self._run_id = run_id
        self._interval_s = interval_s
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, list[str]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, path: str, text: str) -> None:
        if not text:
            return
        if self._interval_s <= 0:
            self._emit(path, text)
            return
        buf = self._pending.get(path)
        if buf is not None:
            buf.append(text)
            return
        self._pending[path] = [text]
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval_s, self._on_timer)

    def flush(self, path: str) -> None:
        """Emit the step's pending text now (before its next event)."""
        if self._pending:
            buf = self._pending.pop(path, None)
            if buf is not None:
                self._emit(path, "".join(buf))

    def flush_all(self) -> None:
        pending, self._pending = self._pending, {}
        for path, buf in pending.items():
            self._emit(path, "".join(buf))

    def close(self) -> None:
        """Flush everything and disarm the timer (end of the run)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.flush_all()

    def _on_timer(self) -> None:
        self._handle = None
        self.flush_all()

    def _emit(self, path: str, text: str) -> None:
        self._sink.emit(Event(self._run_id, EventKind.STEP_DELTA, path, time.time(), {"text": text}))
