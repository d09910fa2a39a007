"""A tenant's max_streams across API nodes: two API servers sharing one database and one real
redis-server as the limits store count the tenant's streams together; a stream closed on one
node frees the slot on the other, also for a client waiting in its stream."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from storyloom.api.services import ApiOptions
from storyloom.api.shared_streams import SharedStreams
from storyloom.limits.base import LimitBackend
from support.api_server import serve_app, submit_chapter

_SSE_ONLY = {"Accept": "text/event-stream"}


async def _frames(lines: object) -> dict[str, str]:
    frame: dict[str, str] = {}
    async for line in lines:  # type: ignore[attr-defined]
        if line == "":
            if frame:
                return frame
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")
    raise AssertionError("the stream ended without a frame")


async def _until(check: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_tenants_stream_limit_holds_across_two_api_nodes(tmp_path: Path, redis_url: str) -> None:
    fields = {"limits_url": redis_url, "sse_max_streams_per_tenant": 2}
    options = ApiOptions(heartbeat_s=0.2)
    async with (
        serve_app(tmp_path, options, **fields) as one,
        serve_app(tmp_path, options, **fields) as two,
    ):
        assert one.app.state.services.shared_streams is not None
        jobs = [await submit_chapter(one, "t") for _ in range(4)]
        other = await submit_chapter(one, "u")
        async with AsyncExitStack() as stack:
            held = [
                await stack.enter_async_context(
                    one.client.stream("GET", f"/api/jobs/{job}/events", headers={"X-Tenant": "t"})
                )
                for job in jobs[:2]
            ]
            assert all(r.status_code == 200 for r in held)
            shared = one.app.state.services.shared_streams
            await _until(lambda: shared.held_here("t") == 2, "leases never taken")

            over = await two.client.get(f"/api/jobs/{jobs[2]}/events", headers={"X-Tenant": "t"})
            assert over.status_code == 429, over.text
            body = over.json()
            assert body["limit"] == "max_streams" and "2 of them on other API nodes" in body["message"]
            async with two.client.stream(
                "GET", f"/api/jobs/{other}/events", headers={"X-Tenant": "u"}
            ) as fine:
                assert fine.status_code == 200  # another tenant is not held up

            # a slot freed on the first node is the second node's queued client's
            await held[0].aclose()
            await _until(lambda: shared.held_here("t") == 1, "lease never released")
            back = await stack.enter_async_context(
                two.client.stream(
                    "GET",
                    f"/api/jobs/{jobs[2]}/events",
                    params={"queue_token": body["queue_token"]},
                    headers={"X-Tenant": "t"},
                )
            )
            assert back.status_code == 200

            # an EventSource on the second node waits in its stream for the first node's last slot
            waiting = await stack.enter_async_context(
                two.client.stream(
                    "GET", f"/api/jobs/{jobs[3]}/events", headers={**_SSE_ONLY, "X-Tenant": "t"}
                )
            )
            lines = waiting.aiter_lines()
            first = await _frames(lines)
            assert first["event"] == "queued" and json.loads(first["data"])["position"] == 1
            await held[1].aclose()
            async with asyncio.timeout(10):
                turn = await _frames(lines)
            assert turn["event"] == "job.submitted", turn


async def test_a_dead_nodes_streams_stop_counting_when_their_leases_expire(redis_url: str) -> None:
    crashed = SharedStreams(LimitBackend.from_url(redis_url), lease_ttl_s=0.6)
    survivor = SharedStreams(LimitBackend.from_url(redis_url), lease_ttl_s=0.6)
    tenant = f"t{time.time_ns()}"
    try:
        crashed.hold(tenant)
        crashed.hold(tenant)
        await _until(lambda: crashed.held_here(tenant) == 2, "leases never taken")
        await survivor.refresh(tenant)
        assert survivor.elsewhere(tenant) == 2 and crashed.elsewhere(tenant) == 0
        await asyncio.sleep(0.5)  # renewed at ttl/3: still held while the node lives
        await survivor.refresh(tenant)
        assert survivor.elsewhere(tenant) == 2
        assert crashed._renewer is not None
        crashed._renewer.cancel()  # the node dies: its leases are renewed no more
        await asyncio.sleep(0.8)
        await survivor.refresh(tenant)
        assert survivor.elsewhere(tenant) == 0
    finally:
        crashed._mine.clear()
        await crashed.aclose()
        await survivor.aclose()


async def test_an_unreachable_store_counts_this_nodes_streams_only() -> None:
    broken = SharedStreams(LimitBackend.from_url("redis://127.0.0.1:9/0"))
    try:
        await broken.refresh("t")
        assert broken.elsewhere("t") == 0
        release = broken.hold("t")
        await asyncio.sleep(0.2)
        release()
    finally:
        await broken.aclose()


@pytest.mark.parametrize("url", [None, "memory://"])
async def test_without_a_shared_store_nothing_is_shared(tmp_path: Path, url: str | None) -> None:
    fields: dict[str, object] = {"sse_max_streams_per_tenant": 2}
    if url:
        fields["limits_url"] = url
    async with serve_app(tmp_path, ApiOptions(heartbeat_s=0.2), **fields) as api:
        assert api.app.state.services.shared_streams is None
