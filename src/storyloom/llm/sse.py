"""Reading a provider's SSE stream cheaply: one split per received block, and fewer reads.

A worker holds hundreds of streams open and a provider sends a chunk per token or two (about 50 a
second per stream): profiled at 200 concurrent chapter jobs, reading the provider's streams was the
largest share of a worker's CPU, and most of it was not parsing but waking up for every chunk —
the selector, the transport's read, aiohttp's parser, a future resolved, the reading task resumed.

`SseDataParser` splits whatever bytes have arrived (any number of events, or a part of one) with
one `split` per block. `ReadPacing` lets a stream that has started answering be read on a shared
tick instead of at every chunk: after a block is handled, the stream's transport stops reading and
one timer per event loop resumes every paused transport, so each read drains the several chunks the
kernel buffered meanwhile. The first token is never held (time to first token is what a reader
waits on most); later text waits at most one tick, which stretches with the number of streams like
the delta coalescing interval does (flow.coalesce.DeltaPacing), whose events go out no more often.
"""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["ReadPacing", "SseDataParser", "SseLineTooLong", "read_pacing"]

#: The longest SSE line accepted (an answer's usage or a tool call's arguments fit many times over);
#: beyond it the body is not an event stream but something that would fill memory.
MAX_LINE_BYTES = 8 * 2**20


class SseLineTooLong(ValueError):
    """A line grew past MAX_LINE_BYTES without ending."""


class SseDataParser:
    """The payloads of an SSE body's `data:` lines, fed in blocks as they arrive.

    Comments (`:`), `event:`/`id:`/`retry:` fields and blank lines are skipped. A line may end in
    LF or CRLF; `data:` may or may not be followed by a space; a line split across blocks is kept
    until its end arrives. Each `data:` line is one payload (providers send one JSON document per
    line; the spec's joining of consecutive data lines is not used by any of them).
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, block: bytes) -> list[bytes]:
        """The payloads completed by `block`, in order; raises SseLineTooLong past MAX_LINE_BYTES."""
        if self._pending:
            block = self._pending + block
        lines = block.split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:
            raise SseLineTooLong(f"an SSE line is longer than {MAX_LINE_BYTES} bytes")
        self._pending = pending
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def close(self) -> list[bytes]:
        """The payload of a last line without its newline (a body cut mid-line), if it has one."""
        pending, self._pending = self._pending, b""
        return [pending[5:].strip()] if pending.startswith(b"data:") else []


class ReadPacing:
    """Shared read ticks for the streams of one event loop.

    `pause(transport)` stops a transport reading until the next tick; one timer resumes all paused
    transports at once. The tick is `streams / reads_per_s` seconds, between `min_interval_s` and
    `max_interval_s`: with few streams reads come almost as often as chunks, with hundreds the
    process wakes for about `reads_per_s` stream reads a second, each several chunks long.

    The defaults keep the tick at about half the delta coalescing interval (flow.coalesce
    DeltaPacing: streams / 400 per second, up to 0.5 s), so pacing the reads delays no delta event
    by more than half its own interval: at 200 streams a worker reads each every 0.25 s, not every
    0.1 s (measured, scripts/worker_stream_cpu.py at 200 streams: 1.73 -> 1.09 CPU ms per call).
    """

    __slots__ = (
        "_handle",
        "_loop",
        "_paused",
        "max_interval_s",
        "min_interval_s",
        "reads_per_s",
        "streams",
        "ticks",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        min_interval_s: float = 0.025,
        max_interval_s: float = 0.25,
        reads_per_s: float = 800.0,
    ) -> None:
        if not 0 < min_interval_s <= max_interval_s or reads_per_s <= 0:
            raise ValueError("need 0 < min_interval_s <= max_interval_s and reads_per_s > 0")
        self._loop = loop
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self.reads_per_s = reads_per_s
        self.streams = 0  # streams open in this loop (the reader counts itself in and out)
        self.ticks = 0
        self._paused: set[asyncio.Transport] = set()
        self._handle: asyncio.TimerHandle | None = None

    def interval_s(self) -> float:
        return min(self.max_interval_s, max(self.min_interval_s, self.streams / self.reads_per_s))

    def pause(self, transport: asyncio.Transport) -> None:
        """Hold `transport`'s reads until the next tick; one already held (by aiohttp's own flow
        control, or closing) is left alone, so only what this paused is resumed here."""
        if transport in self._paused or transport.is_closing() or not transport.is_reading():
            return
        transport.pause_reading()
        self._paused.add(transport)
        if self._handle is None:
            self._handle = self._loop.call_later(self.interval_s(), self._tick)

    def release(self, transport: asyncio.Transport) -> None:
        """The stream ends (or fails): resume its transport now if this paused it, so a connection
        never goes back to the pool unable to read."""
        if transport in self._paused:
            self._paused.discard(transport)
            if not transport.is_closing():
                transport.resume_reading()

    def _tick(self) -> None:
        self._handle = None
        self.ticks += 1
        paused, self._paused = self._paused, set()
        for transport in paused:
            if not transport.is_closing():
                transport.resume_reading()


_PACINGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadPacing] = weakref.WeakKeyDictionary()


def read_pacing() -> ReadPacing:
    """The running loop's pacing (created on first use; it dies with its loop)."""
    loop = asyncio.get_running_loop()
    pacing = _PACINGS.get(loop)
    if pacing is None:
        pacing = _PACINGS[loop] = ReadPacing(loop)
    return pacing
