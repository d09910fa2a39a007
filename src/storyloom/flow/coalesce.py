"""Token deltas coalesced into few `step.delta` events, so a thousand streams do not flood a sink.

One timer per run (not per step): the first delta after a quiet period arms it; when it fires,
every step's pending text goes out as one event per step. A step's pending text is also flushed
before any other event of that step, so consumers see deltas, then finished, in order.

The interval is a number, or a `DeltaPacing` shared by every run of a process, which stretches it
when many steps stream at once: each streaming step costs one event per interval, and every event
is committed, fanned out and sent to a client. At 500 chapters in one worker pair, a fixed 50 ms
made deltas half of all events, and their volume, not their content, set the service's lag.
"""

from __future__ import annotations

import asyncio
import time

from storyloom.flow.types import Event, EventKind, EventSink

__all__ = ["DeltaCoalescer", "DeltaPacing"]


class DeltaPacing:
    """The coalescing interval for a whole process: `min_interval_s` while few steps stream,
    longer as more do, so that they emit about `max_events_per_s` delta events in all, up to
    `max_interval_s`."""

    __slots__ = ("max_events_per_s", "max_interval_s", "min_interval_s", "streaming")

    def __init__(
        self, *, min_interval_s: float = 0.05, max_interval_s: float = 0.5, max_events_per_s: float = 400.0
    ) -> None:
        if not 0 < min_interval_s <= max_interval_s or max_events_per_s <= 0:
            raise ValueError("need 0 < min_interval_s <= max_interval_s and max_events_per_s > 0")
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self.max_events_per_s = max_events_per_s
        self.streaming = 0  # steps that have streamed and not finished, over every run

    def interval_s(self) -> float:
        return min(self.max_interval_s, max(self.min_interval_s, self.streaming / self.max_events_per_s))


class DeltaCoalescer:
    __slots__ = (
        "_handle",
        "_interval",
        "_loop",
        "_pending",
        "_run_id",
        "_since",
        "_sink",
        "_started",
        "_streaming",
    )

    def __init__(self, sink: EventSink, run_id: str, interval: float | DeltaPacing) -> None:
        self._sink = sink
        self._run_id = run_id
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, list[str]] = {}
        # When each pending text's first token arrived: delta events carry it (`data.since`), so a
        # client can tell the coalescing delay from the delivery delay.
        self._since: dict[str, float] = {}
        # Steps that have emitted a delta. A step's first text goes out at once: the time to its
        # first token is what a reader waits on most, and one more event per step is cheap.
        self._started: set[str] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._streaming: set[str] = set()  # counted in a DeltaPacing

    def _interval_s(self) -> float:
        interval = self._interval
        return interval.interval_s() if isinstance(interval, DeltaPacing) else interval

    def add(self, path: str, text: str) -> None:
        if not text:
            return
        if isinstance(self._interval, DeltaPacing) and path not in self._streaming:
            self._streaming.add(path)
            self._interval.streaming += 1
        buf = self._pending.get(path)
        if buf is not None:  # the hot path: a token joins its step's pending text
            buf.append(text)
            return
        interval_s = self._interval_s()
        if interval_s <= 0 or path not in self._started:
            self._started.add(path)
            self._emit(path, text, time.time())
            return
        self._pending[path] = [text]
        self._since[path] = time.time()
        if self._handle is None:
            self._handle = self._loop.call_later(interval_s, self._on_timer)

    def flush(self, path: str) -> None:
        """Emit the step's pending text now (before its next event)."""
        if self._pending:
            buf = self._pending.pop(path, None)
            if buf is not None:
                self._emit(path, "".join(buf), self._since.pop(path, 0.0))

    def finish(self, path: str) -> None:
        """The step ended: emit its pending text and stop counting it as streaming."""
        self.flush(path)
        self._started.discard(path)
        if path in self._streaming:
            self._streaming.discard(path)
            self._uncount(1)

    def flush_all(self) -> None:
        pending, self._pending = self._pending, {}
        since, self._since = self._since, {}
        for path, buf in pending.items():
            self._emit(path, "".join(buf), since.get(path, 0.0))

    def close(self) -> None:
        """Flush everything and disarm the timer (end of the run)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.flush_all()
        self._uncount(len(self._streaming))
        self._streaming.clear()
        self._started.clear()

    def _uncount(self, n: int) -> None:
        if n and isinstance(self._interval, DeltaPacing):
            self._interval.streaming = max(0, self._interval.streaming - n)

    def _on_timer(self) -> None:
        self._handle = None
        self.flush_all()

    def _emit(self, path: str, text: str, since: float) -> None:
        data = {"text": text, "since": round(since, 4)}
        self._sink.emit(Event(self._run_id, EventKind.STEP_DELTA, path, time.time(), data))
