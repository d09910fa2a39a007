"""Server-sent events: wire format, heartbeats, and the per-connection loop.

One async generator per connection on Starlette's StreamingResponse: no thread, no buffer beyond
the subscription's own, so hundreds of open streams cost little. Every event carries `id: <seq>`
(the job's event offset), so a client resumes with `Last-Event-ID` exactly after what it saw.

Events come in batches (whatever is ready at once) and a batch goes out as one write: each write
passes through every middleware's `send` and costs a syscall, which at 500 streams was a fifth of
the API process's CPU.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "SSE_HEADERS",
    "EventLike",
    "SseEvent",
    "event_stream",
    "format_comment",
    "format_event",
    "parse_after",
]

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


class EventLike(Protocol):
    """What a stream sends: the job queue's stored events have this shape."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def step(self) -> str | None: ...
    @property
    def ts(self) -> float: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SseEvent:
    """A concrete `EventLike`, for events the API makes itself and for tests."""

    seq: int
    kind: str
    step: str | None
    ts: float
    data: dict[str, Any]


def format_event(event: EventLike) -> bytes:
    # No `event:` field: the seed's clients read everything through EventSource.onmessage.
    doc = {"seq": event.seq, "kind": event.kind, "step": event.step, "ts": event.ts, "data": event.data}
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.seq}\ndata: {body}\n\n".encode()


def format_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def parse_after(last_event_id: str | None, after: int | None) -> int:
    """The offset to resume after: Last-Event-ID wins over ?after=; 0 means from the start."""
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError as exc:
            raise ValueError("Last-Event-ID must be an event id (an integer) sent by this stream.") from exc
        return max(value, 0)
    return max(after or 0, 0)


async def event_stream(
    batches: AsyncIterator[Sequence[EventLike]],
    *,
    heartbeat_s: float,
    is_terminal: Callable[[EventLike], bool],
    on_sent: Callable[[EventLike], None] | None = None,
    preamble: bytes = b"",
    closing: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """Forward batches of events as SSE with a heartbeat comment whenever `heartbeat_s` passes in silence.

    The pending `anext` is kept across heartbeats instead of being cancelled by a timeout, because
    cancelling it would tear down the subscription mid-read. The stream ends after a terminal event
    (nothing after it in its batch is sent), or as soon as `closing` is set (server shutdown; the
    client resumes with Last-Event-ID).
    """
    if preamble:
        yield preamble
    nxt: asyncio.Future[Sequence[EventLike]] = asyncio.ensure_future(anext(batches))
    closed: asyncio.Future[Any] = asyncio.ensure_future(closing.wait()) if closing else asyncio.Future()
    try:
        while True:
            done, _ = await asyncio.wait(
                {nxt, closed}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if closed in done and nxt not in done:
                return
            if not done:
                yield format_comment(f"ping {time.time():.3f}")
                continue
            try:
                batch = nxt.result()
            except StopAsyncIteration:
                return
            frames: list[bytes] = []
            sent: list[EventLike] = []
            for event in batch:
                frames.append(format_event(event))
                sent.append(event)
                if is_terminal(event):
                    break
            if frames:
                yield b"".join(frames)
            if on_sent is not None:
                for event in sent:
                    on_sent(event)
            if sent and is_terminal(sent[-1]):
                return
            nxt = asyncio.ensure_future(anext(batches))
    finally:
        closed.cancel()
        if not nxt.done():
            nxt.cancel()
            try:
                await nxt
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()
