"""A job's events as an SSE response: replay from an offset, then follow live until the job ends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from storyloom.api.metrics import EVENT_LAG, HUB_LAG, SSE_OPEN, STEP_DURATION
from storyloom.api.services import Services
from storyloom.api.sse import SSE_HEADERS, EventLike, event_stream
from storyloom.jobs.events import Subscription
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job

__all__ = ["ReleasingResponse", "job_events_response"]

_PAGE = 500


async def _finished_job_events(
    services: Services, job_id: str, after: int
) -> AsyncIterator[Sequence[EventLike]]:
    """A finished job's log, paged; ends even if retention already removed the terminal event."""
    while True:
        page = await services.queue.events(job_id, after, _PAGE)
        if page:
            yield page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


async def _live_job_events(
    services: Services, job_id: str, after: int, subscription: Subscription | None
) -> AsyncIterator[Sequence[EventLike]]:
    """Replay then live, as batches of what is ready at once."""
    opened = time.time()
    if subscription is None:
        _, subscription = await services.hub.open(job_id, after)
    async with subscription:
        async for first in subscription:
            batch = [first, *subscription.drain_ready(_PAGE - 1)]
            now = time.time()
            for event in batch:
                if event.ts >= opened:  # live: older events are replays, whose age is not a lag
                    HUB_LAG.observe(max(0.0, now - event.ts))
            yield batch


def _is_terminal(event: EventLike) -> bool:
    return event.kind in TERMINAL_EVENT_KINDS


def _observer(connected_at: float) -> Any:
    def on_sent(event: EventLike) -> None:
        now = time.time()
        EVENT_LAG.labels("true" if event.ts < connected_at else "false").observe(max(0.0, now - event.ts))
        if event.kind == "step.finished" and event.step:
            elapsed = event.data.get("elapsed_s")
            if isinstance(elapsed, int | float):
                STEP_DURATION.labels(event.step.rsplit("/", 1)[-1]).observe(float(elapsed))

    return on_sent


async def _counted(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    SSE_OPEN.inc()
    try:
        async for chunk in stream:
            yield chunk
    finally:
        SSE_OPEN.dec()


def job_events_response(
    services: Services,
    job: Job,
    after: int,
    *,
    subscription: Subscription | None = None,
    preamble: bytes = b"",
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """Stream `job`'s events with seq > `after` as SSE; the stream ends after its terminal event.

    `subscription`: one from `EventHub.open(job.id, after)`, already replaying.
    """
    if job.status.is_terminal:
        if subscription is not None:
            subscription.close()  # retention may have removed its end: the finished path copes
        source = _finished_job_events(services, job.id, after)
    else:
        source = _live_job_events(services, job.id, after, subscription)
    body = event_stream(
        source,
        heartbeat_s=services.options.heartbeat_s,
        is_terminal=_is_terminal,
        on_sent=_observer(time.time()),
        preamble=preamble,
        closing=services.closing,
    )
    return StreamingResponse(
        _counted(body), media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )


class ReleasingResponse(Response):
    """Any response, with `release` called once it has been sent or its client has gone, however it
    ended. The stream limit's slot is given back here rather than in the body's generator, whose
    `finally` never runs when the client leaves before the first chunk is asked for."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        # Not Response.__init__: nothing is rendered here, `inner` sends itself.
        self.inner = inner
        self.release = release
        self.status_code = inner.status_code
        self.background = None
        self.raw_headers = inner.raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()
