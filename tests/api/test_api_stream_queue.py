"""The SSE limiter (seed 003): N streams per API process and per tenant, a queue in order beyond,
as JSON 429 with a token or as a waiting stream (`retry:` and `queued` events); heartbeats that
stretch with load."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx

from storyloom.api.services import ApiOptions
from storyloom.api.stream_gate import StreamGate, StreamQueuedError
from support.api_server import Served, serve_app, submit_chapter

_SSE_ONLY = {"Accept": "text/event-stream"}


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def _until_freed(api: Served, open_total: int) -> None:
    gate = api.app.state.services.streams
    deadline = time.monotonic() + 10
    while gate.open_total > open_total:  # the server sees a close at its next write (a heartbeat)
        assert time.monotonic() < deadline, "a closed stream's slot was never given back"
        await asyncio.sleep(0.05)


async def test_beyond_the_process_limit_streams_queue_in_order_with_tokens(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(heartbeat_s=0.2), sse_max_streams=2) as api:
        jobs = [await submit_chapter(api, t) for t in ("a", "b", "c", "d")]
        async with AsyncExitStack() as stack:
            held = []
            for job, tenant in zip(jobs[:2], "ab", strict=True):
                held.append(
                    await stack.enter_async_context(
                        api.client.stream("GET", f"/api/jobs/{job}/events", headers={"X-Tenant": tenant})
                    )
                )
                assert held[-1].status_code == 200
            third = await api.client.get(f"/api/jobs/{jobs[2]}/events", headers={"X-Tenant": "c"})
            fourth = await api.client.get(f"/api/jobs/{jobs[3]}/events", headers={"X-Tenant": "d"})
            for r, position in ((third, 1), (fourth, 2)):
                assert r.status_code == 429, r.text
                body = r.json()
                assert body["limit"] == "max_streams_per_process"
                assert body["queue_position"] == position and body["estimated_wait_s"] >= 1
                assert int(r.headers["retry-after"]) >= 1
                assert f"number {position} in the queue" in body["message"]
            await held[0].aclose()
            await _until_freed(api, 1)
            # the freed slot is the third's: neither a newcomer nor the fourth may take it
            newcomer = await api.client.get(f"/api/jobs/{jobs[0]}/events", headers={"X-Tenant": "a"})
            assert newcomer.status_code == 429 and newcomer.json()["queue_position"] == 3
            token4 = fourth.json()["queue_token"]
            again4 = await api.client.get(
                f"/api/jobs/{jobs[3]}/events", params={"queue_token": token4}, headers={"X-Tenant": "d"}
            )
            assert (
                again4.status_code == 429 and again4.json()["queue_position"] == 2
            )  # still behind the third
            token3 = third.json()["queue_token"]
            async with api.client.stream(
                "GET",
                f"/api/jobs/{jobs[2]}/events",
                params={"queue_token": token3},
                headers={"X-Tenant": "c"},
            ) as turn:
                assert turn.status_code == 200
                frame = await anext(_frames(turn))
                assert frame["event"] == "job.submitted" and frame["id"] == "1"
            # another tenant's token is no place in line
            stolen = await api.client.get(
                f"/api/jobs/{jobs[0]}/events", params={"queue_token": token4}, headers={"X-Tenant": "a"}
            )
            assert stolen.status_code == 429 and stolen.json()["queue_token"] != token4


async def test_an_event_source_waits_in_the_stream_for_its_turn(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(heartbeat_s=0.2), sse_max_streams=1) as api:
        first, second, third = [await submit_chapter(api, t) for t in ("a", "b", "c")]
        async with AsyncExitStack() as stack:
            held = await stack.enter_async_context(
                api.client.stream("GET", f"/api/jobs/{first}/events", headers={"X-Tenant": "a"})
            )
            waiting = []
            for job, tenant in ((second, "b"), (third, "c")):
                r = await stack.enter_async_context(
                    api.client.stream(
                        "GET", f"/api/jobs/{job}/events", headers={**_SSE_ONLY, "X-Tenant": tenant}
                    )
                )
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                waiting.append(_frames(r))
            queued = [await anext(frames) for frames in waiting]
            for frame, position in zip(queued, (1, 2), strict=True):
                assert frame["event"] == "queued" and "id" not in frame
                assert int(frame["retry"]) >= 1000
                doc = json.loads(frame["data"])
                assert doc["kind"] == "queued" and doc["position"] == position
            await held.aclose()
            # the first in line gets the slot and its job's events on the same stream
            async with asyncio.timeout(10):
                frame = await anext(waiting[0])
            assert frame["event"] == "job.submitted" and json.loads(frame["data"])["seq"] == 1
            # the second moves up to first, still waiting
            async with asyncio.timeout(10):
                moved = await anext(waiting[1])
            assert moved["event"] == "queued" and json.loads(moved["data"])["position"] == 1
            assert api.app.state.services.streams.open_total == 1


async def test_per_tenant_limit_queues_only_that_tenant(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(heartbeat_s=0.2), sse_max_streams_per_tenant=1) as api:
        a1, a2, b1 = [await submit_chapter(api, t) for t in "aab"]
        async with api.client.stream("GET", f"/api/jobs/{a1}/events", headers={"X-Tenant": "a"}) as held:
            assert held.status_code == 200
            over = await api.client.get(f"/api/jobs/{a2}/events", headers={"X-Tenant": "a"})
            assert over.status_code == 429 and over.json()["limit"] == "max_streams"
            assert "max_streams 1" in over.json()["message"]
            async with api.client.stream("GET", f"/api/jobs/{b1}/events", headers={"X-Tenant": "b"}) as b:
                assert b.status_code == 200  # a's queue holds up nobody else


def test_heartbeats_stretch_with_load() -> None:
    load = [0.0]
    gate = StreamGate(max_streams=10, tenant_limit=lambda _: None, load_per_core=lambda: load[0])
    releases = [gate.enter("t").release for _ in range(5)]
    assert gate.heartbeat_s(15.0) == 15.0
    releases += [gate.enter("t").release for _ in range(2)]  # 70 % of the slots
    assert gate.heartbeat_s(15.0) == 20.0
    releases += [gate.enter("t").release for _ in range(2)]  # 90 %
    assert gate.heartbeat_s(15.0) == 30.0
    for release in releases:
        release()
    assert gate.heartbeat_s(15.0) == 15.0
    load[0] = 0.95  # a busy machine stretches them as much, streams or not
    assert gate.heartbeat_s(15.0) == 30.0


def test_a_ticket_nobody_comes_back_for_expires() -> None:
    gate = StreamGate(max_streams=1, tenant_limit=lambda _: None, ticket_ttl_s=0.0, load_per_core=lambda: 0.0)
    release = gate.enter("a").release
    try:
        gate.enter("b")
    except StreamQueuedError as queued:
        token = queued.token
        wait = queued.wait_s
    assert gate.queued == 1 and gate.position(token) == 1
    release()
    gate._tickets[token].expires = time.monotonic() - 1  # as if `wait` + ttl had passed
    assert wait >= 1
    gate.enter("c").release()  # the newcomer is not held up by the abandoned place
    assert gate.queued == 0
