"""SSE: ids on every event, resume with Last-Event-ID or ?after= (no gap, no duplicate), heartbeats,
the end after the terminal event, and the seed's /generate/stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from storyloom.api.services import ApiOptions
from storyloom.api.sse import SseEvent, event_stream
from support.api_server import ActingWorker, Served, chapter_result, novel_input, serve_app


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Parse an SSE body into frames: {"id": ..., "data": ...} or {"comment": ...}."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def _submit(api: Served) -> str:
    r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
    return str(r.json()["task_id"])


async def test_resume_with_last_event_id_sees_every_event_exactly_once(api: Served) -> None:
    job_id = await _submit(api)
    worker = ActingWorker(api)
    await worker.claim(job_id)
    seen: list[int] = []

    async def read(headers: dict[str, str], stop_after: int | None) -> bool:
        """Read until stop_after events (then drop the connection) or the end; True at the end."""
        async with api.client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            got = 0
            async for frame in _frames(r):
                if "comment" in frame:
                    continue
                doc = json.loads(frame["data"])
                assert int(frame["id"]) == doc["seq"]
                seen.append(doc["seq"])
                got += 1
                if stop_after is not None and got == stop_after:
                    return False
        return True

    async def produce() -> None:
        for i in range(30):
            await worker.emit(job_id, "step.delta", step="versions/v1/plot", text=f"piece {i}")
            await asyncio.sleep(0.01)
        await worker.complete(job_id, chapter_result(["t"]))

    producer = asyncio.create_task(produce())
    try:
        finished = await read({}, stop_after=5)
        while not finished:  # reconnect from the last id, as EventSource does
            finished = await read({"Last-Event-ID": str(seen[-1])}, stop_after=7)
        await producer
    finally:
        await worker.close()
    # 1 job.submitted + 30 deltas + job.completed, each exactly once and in order
    assert seen == list(range(1, 33))
    events = await api.queue.events(job_id, 0, 100)
    assert events[-1].kind == "job.completed"


async def test_after_query_and_finished_jobs_replay_and_end(api: Served) -> None:
    job_id = await _submit(api)
    await api.client.delete(f"/api/jobs/{job_id}")
    r = await api.client.get(f"/api/jobs/{job_id}/events", params={"after": 1})
    frames = [line for line in r.text.split("\n\n") if line.strip()]
    assert len(frames) == 1 and frames[0].startswith("id: 2\n")
    assert json.loads(frames[0].split("data: ", 1)[1])["kind"] == "job.cancelled"
    whole = await api.client.get(f"/api/jobs/{job_id}/events")
    assert [json.loads(f.split("data: ", 1)[1])["kind"] for f in whole.text.split("\n\n") if f.strip()] == [
        "job.submitted",
        "job.cancelled",
    ]
    bad = await api.client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422


async def test_heartbeat_comments_while_idle_and_cancel_ends_the_stream(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(heartbeat_s=0.1)) as api:
        job_id = await _submit(api)
        kinds: list[str] = []
        comments = 0
        async with api.client.stream("GET", f"/api/jobs/{job_id}/events") as r:
            async for frame in _frames(r):
                if "comment" in frame:
                    comments += 1
                    assert frame["comment"].startswith("ping")
                    if comments == 3:
                        await api.client.delete(f"/api/jobs/{job_id}")
                    continue
                kinds.append(json.loads(frame["data"])["kind"])
        assert comments >= 3
        assert kinds == ["job.submitted", "job.cancelled"]  # and the stream ended by itself


async def test_generate_stream_names_the_task_then_streams_its_events(api: Served) -> None:
    worker = ActingWorker(api)
    task_id = ""
    ids: list[int] = []
    try:
        body = {"novel_input": novel_input()}
        async with api.client.stream("POST", "/api/novel/generate/stream", json=body) as r:
            assert r.status_code == 200
            task_id = r.headers["x-task-id"]
            async for frame in _frames(r):
                if "comment" in frame:
                    continue
                doc = json.loads(frame["data"])
                if "id" not in frame:
                    assert doc == {"kind": "task", "task_id": task_id, "status": "pending"}
                    await worker.claim(task_id)
                    await worker.emit(task_id, "step.started", step="director")
                    await worker.emit(task_id, "step.finished", step="director", elapsed_s=0.2)
                    await worker.complete(task_id, chapter_result(["text"]))
                    continue
                ids.append(int(frame["id"]))
    finally:
        await worker.close()
    assert ids == [1, 2, 3, 4]
    metrics = (await api.client.get("/metrics")).text
    assert 'storyloom_step_duration_seconds_count{step="director"}' in metrics
    assert "storyloom_event_lag_seconds_bucket" in metrics


async def test_events_ready_together_go_out_in_one_write_and_the_terminal_one_ends_it() -> None:
    """A burst costs one write per batch, not per event; nothing after the terminal event is sent."""

    def ev(seq: int, kind: str = "step.delta") -> SseEvent:
        return SseEvent(seq=seq, kind=kind, step="s", ts=0.0, data={"text": str(seq)})

    async def batches() -> AsyncIterator[list[SseEvent]]:
        yield [ev(1), ev(2), ev(3)]
        yield [ev(4), ev(5, "job.completed"), ev(6)]
        yield [ev(7)]

    sent: list[int] = []
    writes = [
        chunk
        async for chunk in event_stream(
            batches(),
            heartbeat_s=5.0,
            is_terminal=lambda e: e.kind == "job.completed",
            on_sent=lambda e: sent.append(e.seq),
        )
    ]
    assert len(writes) == 2
    assert [f[: f.index(b"\n") + 1] for f in writes[0].split(b"\n\n")[:-1]] == [
        b"id: 1\n",
        b"id: 2\n",
        b"id: 3\n",
    ]
    assert writes[1].count(b"id: ") == 2 and b"id: 6" not in writes[1]
    assert sent == [1, 2, 3, 4, 5]
