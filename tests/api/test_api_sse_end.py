"""SSE over loopback with a real client: `event:` names each frame, a stream with nothing left to
send answers 204, and a resume past the end of a running job's log follows it to its end."""

from __future__ import annotations

import asyncio
import json

from storyloom.api.sse import MAX_EVENT_ID
from support.api_server import ActingWorker, Served, chapter_result, novel_input


def _frames(text: str) -> list[dict[str, str]]:
    """Parse a whole SSE body into its frames (comments dropped), each field by name."""
    out = []
    for block in text.split("\n\n"):
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                frame[name] = value.removeprefix(" ")
        if frame:
            out.append(frame)
    return out


async def _finished_job(api: Served) -> tuple[str, int]:
    """A job run to completion by an acting worker; returns its id and its last (terminal) seq."""
    r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
    job_id = str(r.json()["task_id"])
    worker = ActingWorker(api)
    try:
        await worker.claim(job_id)
        await worker.emit(job_id, "step.delta", step="versions/v1/plot", text="Lin waits.")
        await worker.complete(job_id, chapter_result(["Lin waits."]))
    finally:
        await worker.close()
    events = await api.queue.events(job_id, 0, 100)
    assert events[-1].kind == "job.completed"
    return job_id, events[-1].seq


async def test_every_frame_names_its_kind_in_the_event_field(api: Served) -> None:
    job_id, last = await _finished_job(api)
    r = await api.client.get(f"/api/jobs/{job_id}/events")
    assert r.status_code == 200
    frames = _frames(r.text)
    assert [int(f["id"]) for f in frames] == list(range(1, last + 1))
    for frame in frames:
        assert frame["event"] == json.loads(frame["data"])["kind"]
    assert frames[-1]["event"] == "job.completed"


async def test_the_submit_and_stream_route_names_its_first_frame_task(api: Served) -> None:
    body = {"novel_input": novel_input()}
    async with api.client.stream("POST", "/api/novel/generate/stream", json=body) as r:
        first = ""
        async for line in r.aiter_lines():
            if line == "":
                break
            first += line + "\n"
    frame = _frames(first)[0]
    assert "id" not in frame and frame["event"] == "task"
    assert json.loads(frame["data"])["task_id"] == r.headers["x-task-id"]


async def test_a_client_that_has_everything_of_an_ended_job_gets_204(api: Served) -> None:
    job_id, last = await _finished_job(api)
    for seen in (last, last + 5, MAX_EVENT_ID):
        r = await api.client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(seen)})
        assert r.status_code == 204, seen
        assert r.content == b"" and "text/event-stream" not in r.headers.get("content-type", "")
    r = await api.client.get(f"/api/jobs/{job_id}/events", params={"after": last})
    assert r.status_code == 204
    # one event short of the end: that event, then the stream ends
    r = await api.client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(last - 1)})
    assert r.status_code == 200
    assert [f["event"] for f in _frames(r.text)] == ["job.completed"]


async def test_a_resume_past_a_running_jobs_log_follows_it_and_ends_with_it(api: Served) -> None:
    r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
    job_id = str(r.json()["task_id"])
    worker = ActingWorker(api)
    try:
        await worker.claim(job_id)
        before = (await api.queue.events(job_id, 0, 100))[-1].seq
        kinds: list[str] = []
        ids: list[int] = []

        async def follow() -> int:
            headers = {"Last-Event-ID": str(before + 1000)}  # an id this job never sent
            async with api.client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        kinds.append(line.removeprefix("event: "))
                    elif line.startswith("id: "):
                        ids.append(int(line.removeprefix("id: ")))
                        if len(ids) == 1:
                            started.set()
                return resp.status_code

        started = asyncio.Event()
        reader = asyncio.create_task(follow())
        await asyncio.sleep(0.3)  # the stream is open and waiting (heartbeats only)
        await worker.emit(job_id, "step.delta", step="versions/v1/plot", text="new")
        async with asyncio.timeout(10):
            await started.wait()
        await worker.complete(job_id, chapter_result(["t"]))
        async with asyncio.timeout(10):  # before the fix: pings until the client gave up
            status = await reader
    finally:
        await worker.close()
    assert status == 200
    assert kinds == ["step.delta", "job.completed"]
    assert ids == [before + 1, before + 2]


async def test_a_bad_last_event_id_is_a_422_with_the_field_error_body(api: Served) -> None:
    job_id, _ = await _finished_job(api)
    for bad in ("abc", "-1", str(MAX_EVENT_ID + 1), "9223372036854775808"):
        r = await api.client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": bad})
        assert r.status_code == 422, bad
        body = r.json()
        assert body["detail"][0]["loc"] == ["header", "Last-Event-ID"]
        assert body["message"].startswith("invalid request: Last-Event-ID:")
    r = await api.client.get(f"/api/jobs/{job_id}/events", params={"after": 2**63})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "after"


async def test_an_unknown_job_is_a_404_with_the_error_body(api: Served) -> None:
    r = await api.client.get("/api/jobs/nope/events", headers={"Last-Event-ID": "3"})
    assert r.status_code == 404
    assert r.json() == {"detail": "no job 'nope'.", "message": "no job 'nope'."}
