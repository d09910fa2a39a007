"""A job's events as an SSE response: replay from an offset, then follow live until the job ends.

A resume (`Last-Event-ID`) that can get nothing more, because the job has ended and the client
has its last event, answers 204: the one answer that makes a browser's EventSource stop
reconnecting. A resume past the end of a running job's log (an id this job never sent) follows
what comes next and ends with the job, instead of waiting for ids that will never come.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

import sqlalchemy as sa
from fastapi import Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from storyloom.api.metrics import EVENT_LAG, HUB_LAG, SSE_OPEN, STEP_DURATION, observe_many
from storyloom.api.services import Services
from storyloom.api.sse import (
    SSE_HEADERS,
    EventLike,
    ReadyBatches,
    event_stream,
    format_comment,
    format_queued,
)
from storyloom.api.stream_gate import Admitted, StreamQueuedError
from storyloom.errors import JobNotFoundError
from storyloom.jobs.events import Subscription
from storyloom.jobs.models import TERMINAL_EVENT_KINDS, Job, StoredEvent
from storyloom.llm.metrics import MetricChildren
from storyloom.store.schema import events

__all__ = ["ReleasingResponse", "job_events_response", "resume_job_events"]

_PAGE = 500


async def _finished_job_events(
    services: Services, job_id: str, after: int, first: Sequence[EventLike] | None = None
) -> AsyncIterator[Sequence[EventLike]]:
    """A finished job's log, paged; ends even if retention already removed the terminal event."""
    while True:
        page = first if first is not None else await services.queue.events(job_id, after, _PAGE)
        first = None
        if page:
            yield page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


class _LiveBatches:
    """Replay then live, as batches of what is ready at once (a `ReadyBatches` for event_stream).

    The hub's lag is observed once per batch (`observe_many`), not once per event."""

    def __init__(
        self, services: Services, job_id: str, after: int, subscription: Subscription | None
    ) -> None:
        self.services = services
        self.job_id = job_id
        self.after = after
        self.sub = subscription
        self.opened = time.time()

    async def _subscription(self) -> Subscription:
        if self.sub is None:
            _, self.sub = await self.services.hub.open(self.job_id, self.after)
        return self.sub

    async def wait_ready(self, timeout_s: float) -> bool:
        return await (await self._subscription()).wait_ready(timeout_s)

    async def next_batch(self) -> Sequence[EventLike]:
        sub = await self._subscription()
        try:
            first = await anext(sub)
        except StopAsyncIteration:
            return ()
        batch = [first, *sub.drain_ready(_PAGE - 1)]
        now, opened = time.time(), self.opened
        # live: older events are replays, whose age is not a lag
        observe_many(HUB_LAG, [max(0.0, now - event.ts) for event in batch if event.ts >= opened])
        return batch

    def interrupt(self) -> None:
        if self.sub is not None:
            self.sub.interrupt()

    async def aclose(self) -> None:
        if self.sub is not None:
            self.sub.close()


def _is_terminal(event: EventLike) -> bool:
    return event.kind in TERMINAL_EVENT_KINDS


# Label children looked up once per label values (`labels()` takes a lock and builds a key).
_CHILD = MetricChildren()


def _observer(connected_at: float) -> Callable[[Sequence[EventLike]], None]:
    """Metrics of a batch just written: one observe per lag histogram child and batch."""

    def on_batch(batch: Sequence[EventLike]) -> None:
        now = time.time()
        live: list[float] = []
        replay: list[float] = []
        for event in batch:
            (replay if event.ts < connected_at else live).append(max(0.0, now - event.ts))
            if event.kind == "step.finished" and event.step:
                elapsed = event.data.get("elapsed_s")
                if isinstance(elapsed, int | float):
                    _CHILD(STEP_DURATION, event.step.rsplit("/", 1)[-1]).observe(float(elapsed))
        observe_many(_CHILD(EVENT_LAG, "false"), live)
        observe_many(_CHILD(EVENT_LAG, "true"), replay)

    return on_batch


async def _counted(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    SSE_OPEN.inc()
    try:
        async for chunk in stream:
            yield chunk
    finally:
        SSE_OPEN.dec()


async def _last_seq(services: Services, job_id: str) -> int:
    query = sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0)).where(events.c.job_id == job_id)
    async with services.db.read() as conn:
        return int(await conn.scalar(query) or 0)


async def resume_job_events(
    services: Services,
    job_id: str,
    after: int,
    *,
    read_scope: str | None,
    tenant: str,
    queue_token: str | None = None,
    wait_in_stream: bool = False,
) -> Response:
    """GET /api/jobs/{id}/events: 200 and the events after `after`, or 204 when none can come.

    `read_scope`: the tenant whose jobs the caller may read (None: any, an admin key); another
    tenant's job is as unknown as none. The stream holds one of the process's and `tenant`'s
    stream slots until it ends (not a 204, which ends at once). No slot free: 429 with a place in
    the queue (`queue_token`: the place the caller already holds), or, `wait_in_stream`, a stream
    that waits in line and then follows the job (api/stream_gate.py).
    """
    job, subscription = await services.hub.open(job_id, after)
    if job is not None and read_scope is not None and job.tenant != read_scope:
        subscription.close()
        job = None
    if job is not None and after and not job.status.is_terminal:
        last = await _last_seq(services, job_id)
        if last < after:  # an id past this job's log: follow from where the log really is
            subscription.close()
            after = last
            job, subscription = await services.hub.open(job_id, after)
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    first: list[StoredEvent] | None = None
    if job.status.is_terminal:
        subscription.close()  # retention may have removed its end: the finished path copes
        first = await services.queue.events(job_id, after, _PAGE)
        if not first:
            return Response(status_code=204)
    try:
        await services.count_streams(tenant)
        admitted = services.enter_stream(tenant, queue_token)
    except StreamQueuedError as queued:
        subscription.close()  # a waiting client holds no subscription
        if not wait_in_stream:
            raise
        line = _InLine(services, tenant, queued)
        return ReleasingResponse(_stream(line.body(job_id, after)), line.release)
    except BaseException:
        subscription.close()
        raise
    if first is not None:
        source = _finished_job_events(services, job_id, after, first)
        return ReleasingResponse(_respond(services, source), admitted.release)
    return ReleasingResponse(
        job_events_response(services, job, after, subscription=subscription), admitted.release
    )


class _InLine:
    """A stream waiting for its turn: `queued` events while it waits, then the job's events."""

    def __init__(self, services: Services, tenant: str, queued: StreamQueuedError) -> None:
        self.services = services
        self.tenant = tenant
        self.queued = queued
        self.admitted: Admitted | None = None

    def release(self) -> None:
        if self.admitted is not None:
            self.admitted.release()
        else:
            self.services.streams.leave(self.queued.token)

    def _frame(self, queued: StreamQueuedError) -> bytes:
        doc = {
            "kind": "queued",
            "queue_token": queued.token,
            "position": queued.position,
            "estimated_wait_s": queued.wait_s,
        }
        return format_queued(doc, retry_ms=int(queued.wait_s * 1000))

    async def body(self, job_id: str, after: int) -> AsyncIterator[bytes]:
        gate, services = self.services.streams, self.services
        yield self._frame(self.queued)
        position = self.queued.position
        pinged = time.monotonic()
        while self.admitted is None:
            version = gate.version
            try:
                await services.count_streams(self.tenant)
                self.admitted = services.enter_stream(self.tenant, self.queued.token)
                break
            except StreamQueuedError as queued:
                if queued.position != position:
                    position = queued.position
                    yield self._frame(queued)
            if services.closing.is_set():
                return  # shutting down: the client comes back elsewhere (retry:)
            # Streams other nodes close wake nobody here: with a shared count, look again each second.
            await gate.changed(version, min(services.heartbeat_s(), services.stream_recheck_s()))
            if time.monotonic() - pinged >= services.heartbeat_s() * 0.99:
                pinged = time.monotonic()
                yield format_comment(f"ping {time.time():.3f}")
        job, subscription = await services.hub.open(job_id, after)
        if job is None:  # removed meanwhile (retention): nothing more can come
            subscription.close()
            return
        if job.status.is_terminal:
            subscription.close()
            source: AsyncIterator[Sequence[EventLike]] | ReadyBatches
            source = _finished_job_events(services, job_id, after)
        else:
            source = _LiveBatches(services, job_id, after, subscription)
        async for chunk in _body(services, source):
            yield chunk


def _body(
    services: Services, source: AsyncIterator[Sequence[EventLike]] | ReadyBatches, *, preamble: bytes = b""
) -> AsyncIterator[bytes]:
    return event_stream(
        source,
        heartbeat_s=services.heartbeat_s,
        is_terminal=_is_terminal,
        on_batch=_observer(time.time()),
        preamble=preamble,
        closing=services.closing,
    )


def _stream(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(
        _counted(body), media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )


def _respond(
    services: Services,
    source: AsyncIterator[Sequence[EventLike]] | ReadyBatches,
    *,
    preamble: bytes = b"",
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    return _stream(_body(services, source, preamble=preamble), headers)


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
    source: AsyncIterator[Sequence[EventLike]] | ReadyBatches
    if job.status.is_terminal:
        if subscription is not None:
            subscription.close()  # retention may have removed its end: the finished path copes
        source = _finished_job_events(services, job.id, after)
    else:
        source = _LiveBatches(services, job.id, after, subscription)
    return _respond(services, source, preamble=preamble, headers=headers)


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
