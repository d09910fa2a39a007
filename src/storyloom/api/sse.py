"""Server-sent events: wire format, heartbeats, and the per-connection loop.

One async generator per connection on Starlette's StreamingResponse: no thread, no buffer beyond
the subscription's own, so hundreds of open streams cost little. Every event carries `id: <seq>`
(the job's event offset), so a client resumes with `Last-Event-ID` exactly after what it saw, and
`event: <kind>`, so a browser listens per kind (`addEventListener("step.delta", ...)`); an
EventSource's `onmessage` sees only frames without a name, which this API never sends.

Events come in batches (whatever is ready at once) and a batch goes out as one write: each write
passes through every middleware's `send` and costs a syscall, which at 500 streams was a fifth of
the API process's CPU. A frame is encoded once per stored event and shared by every stream of its
job (`StoredEvent.encoded`). A live stream waits on its subscription itself (`ReadyBatches`):
no task, no `asyncio.wait` and no timer callbacks per batch, which at 2,000 streams cost more
than the frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from storyloom import fastjson
from storyloom.jobs.models import StoredEvent

__all__ = [
    "MAX_EVENT_ID",
    "SSE_ENDED",
    "SSE_HEADERS",
    "SSE_OK",
    "SSE_OK_QUEUED",
    "SSE_SUBMITTED",
    "EventLike",
    "ReadyBatches",
    "SseEvent",
    "event_stream",
    "format_comment",
    "format_event",
    "format_named",
    "format_queued",
]

# Event ids are the `seq` column, a 32-bit integer on PostgreSQL: a bigger id cannot exist.
MAX_EVENT_ID = 2**31 - 1

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


def _event_schema(*data_models: str) -> dict[str, Any]:
    """One SSE event as OpenAPI describes it (and schemathesis checks it): its fields as strings,
    `data` a JSON document of one of `data_models` (components/schemas, added by api/openapi.py)."""
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in data_models]
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event's seq"},
            "event": {"type": "string", "description": "the event's kind"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": refs[0] if len(refs) == 1 else {"anyOf": refs},
            },
        },
        "description": "one frame; `: ping` comments come while nothing happens",
    }


def _sse_ok(*data_models: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {"text/event-stream": {"schema": _event_schema(*data_models)}},
            "description": "server-sent events, until the job's terminal event",
        }
    }


# OpenAPI `responses` of the routes that stream (FastAPI's `responses=`).
SSE_OK = _sse_ok("JobEventOut")
SSE_SUBMITTED = _sse_ok("TaskFrameOut", "JobEventOut")  # the first frame names the task
# GET /api/jobs/{id}/events: a client that accepts only text/event-stream may first wait in line.
SSE_OK_QUEUED = _sse_ok("QueuedOut", "JobEventOut")
SSE_ENDED: dict[int | str, dict[str, Any]] = {
    204: {
        "description": "the job has ended and the client has every event (Last-Event-ID at or past its"
        " end): nothing to stream, and a browser's EventSource stops reconnecting"
    }
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


class ReadyBatches(Protocol):
    """A live source a stream can wait on without consuming it (api/streams.py, on a hub
    subscription): `wait_ready` is the heartbeat's wait, `next_batch` then returns at once with
    what is at hand (an empty batch: the source has ended), `interrupt` ends a wait early."""

    async def wait_ready(self, timeout_s: float) -> bool: ...

    async def next_batch(self) -> Sequence[EventLike]: ...

    def interrupt(self) -> None: ...

    async def aclose(self) -> None: ...


def format_event(event: EventLike) -> bytes:
    """The event's frame; a stored event's is made once and kept on it for its other streams."""
    if isinstance(event, StoredEvent) and event.encoded is not None:
        return event.encoded
    doc = {"seq": event.seq, "kind": event.kind, "step": event.step, "ts": event.ts, "data": event.data}
    head = f"id: {event.seq}\nevent: {_field(event.kind)}\ndata: ".encode()
    frame = head + fastjson.dumps_bytes(doc) + b"\n\n"
    if isinstance(event, StoredEvent):
        object.__setattr__(event, "encoded", frame)  # a cache on a frozen event (see StoredEvent)
    return frame


def format_named(kind: str, doc: dict[str, Any]) -> bytes:
    """A frame without an id (it moves no resume point): the submit-and-stream route's first one."""
    return f"event: {_field(kind)}\ndata: ".encode() + fastjson.dumps_bytes(doc) + b"\n\n"


def _field(value: str) -> str:
    # A line break would end the field and start another: kinds never have one, but be sure.
    return value.replace("\r", " ").replace("\n", " ")


def format_queued(doc: dict[str, Any], *, retry_ms: int) -> bytes:
    """A waiting stream's place in the queue: `retry:` (when an EventSource that loses the
    connection comes back) and a `queued` event without an id (it moves no resume point)."""
    return f"retry: {max(1000, retry_ms)}\n".encode() + format_named("queued", doc)


def format_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def _frames(
    batch: Sequence[EventLike], is_terminal: Callable[[EventLike], bool]
) -> tuple[bytes, list[EventLike]]:
    """One write for a batch, and the events in it: up to and including a terminal one."""
    sent: list[EventLike] = []
    for event in batch:
        sent.append(event)
        if is_terminal(event):
            break
    if len(sent) == 1:
        return format_event(sent[0]), sent
    return b"".join([format_event(event) for event in sent]), sent


async def event_stream(
    batches: AsyncIterator[Sequence[EventLike]] | ReadyBatches,
    *,
    heartbeat_s: float | Callable[[], float],
    is_terminal: Callable[[EventLike], bool],
    on_sent: Callable[[EventLike], None] | None = None,
    on_batch: Callable[[Sequence[EventLike]], None] | None = None,
    preamble: bytes = b"",
    closing: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """Forward batches of events as SSE with a heartbeat comment whenever `heartbeat_s` passes in silence.

    The pending `anext` is kept across heartbeats instead of being cancelled by a timeout, because
    cancelling it would tear down the subscription mid-read; a `ReadyBatches` source is waited on
    without consuming instead. The stream ends after a terminal event (nothing after it in its
    batch is sent), or as soon as `closing` is set (server shutdown; the client resumes with
    Last-Event-ID). `heartbeat_s` may be a function: read before each wait, so the interval
    stretches and shrinks with the process's load (api/stream_gate.py). `on_sent` is called per
    event sent, `on_batch` once per write with its events (metrics: one observe per batch).
    """
    interval = heartbeat_s if callable(heartbeat_s) else (lambda: heartbeat_s)
    if preamble:
        yield preamble
    if not hasattr(batches, "__anext__"):
        ready_source: ReadyBatches = batches  # type: ignore[assignment]
        async for chunk in _ready_stream(ready_source, interval, is_terminal, on_sent, on_batch, closing):
            yield chunk
        return
    source: AsyncIterator[Sequence[EventLike]] = batches  # type: ignore[assignment]
    nxt: asyncio.Future[Sequence[EventLike]] = asyncio.ensure_future(anext(source))
    closed: asyncio.Future[Any] = asyncio.ensure_future(closing.wait()) if closing else asyncio.Future()
    try:
        while True:
            done, _ = await asyncio.wait(
                {nxt, closed}, timeout=interval(), return_when=asyncio.FIRST_COMPLETED
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
            frames, sent = _frames(batch, is_terminal)
            if sent:
                yield frames
            _report(sent, on_sent, on_batch)
            if sent and is_terminal(sent[-1]):
                return
            nxt = asyncio.ensure_future(anext(source))
    finally:
        closed.cancel()
        if not nxt.done():
            nxt.cancel()
            try:
                await nxt
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _report(
    sent: Sequence[EventLike],
    on_sent: Callable[[EventLike], None] | None,
    on_batch: Callable[[Sequence[EventLike]], None] | None,
) -> None:
    if on_sent is not None:
        for event in sent:
            on_sent(event)
    if on_batch is not None and sent:
        on_batch(sent)


async def _ready_stream(
    source: ReadyBatches,
    interval: Callable[[], float],
    is_terminal: Callable[[EventLike], bool],
    on_sent: Callable[[EventLike], None] | None,
    on_batch: Callable[[Sequence[EventLike]], None] | None,
    closing: asyncio.Event | None,
) -> AsyncIterator[bytes]:
    """`event_stream` on a source it can wait on: per batch one wait and one write, nothing else."""
    closed: asyncio.Future[Any] | None = None
    if closing is not None:
        closed = asyncio.ensure_future(closing.wait())  # one for the stream's life, not per batch
        closed.add_done_callback(lambda _: source.interrupt())
    try:
        while True:
            if closing is not None and closing.is_set():
                return
            ready = await source.wait_ready(interval())
            if closing is not None and closing.is_set():
                return
            if not ready:
                yield format_comment(f"ping {time.time():.3f}")
                continue
            batch = await source.next_batch()
            if not batch:
                return
            frames, sent = _frames(batch, is_terminal)
            yield frames
            _report(sent, on_sent, on_batch)
            if is_terminal(sent[-1]):
                return
    finally:
        if closed is not None:
            closed.cancel()
        await source.aclose()
