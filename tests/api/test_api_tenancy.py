"""Every resource is its tenant's: route by route, with two tenants' keys against a real server.

Alice makes jobs (plain, streamed, and a project chapter's, completed by an acting worker); Bob's
key then tries every route on her ids and gets 404, changing nothing; an admin key reads her jobs
but changes nothing either, and sees no project of hers.
"""

from __future__ import annotations

import json
from typing import Any

from support.api_server import ActingWorker, Keys, Served, chapter_result, novel_input


async def _first_frame(served: Served, headers: dict[str, str], body: dict[str, Any]) -> str:
    """POST /generate/stream and read the task frame; the stream is closed after it."""
    async with served.client.stream(
        "POST", "/api/novel/generate/stream", json=body, headers=headers
    ) as stream:
        assert stream.status_code == 200, await stream.aread()
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                frame = json.loads(line[6:])
                assert frame["kind"] == "task"
                return str(frame["task_id"])
    raise AssertionError("no task frame")


async def _status(served: Served, method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
    """The status of a request, without reading a body that may be an endless event stream."""
    async with served.client.stream(method, path, headers=headers, **kw) as r:
        return r.status_code


async def _alices_world(served: Served, keys: Keys) -> dict[str, str]:
    alice = keys.auth("alice")
    ids: dict[str, str] = {}
    r = await served.client.post(
        "/api/novel/generate",
        json={"novel_input": novel_input("done"), "idempotency_key": "a-1"},
        headers=alice,
    )
    ids["done"] = r.json()["task_id"]
    r = await served.client.post(
        "/api/novel/generate", json={"novel_input": novel_input("waiting")}, headers=alice
    )
    ids["waiting"] = r.json()["task_id"]
    ids["streamed"] = await _first_frame(
        served, {**alice, "Idempotency-Key": "a-stream"}, {"novel_input": novel_input("streamed")}
    )
    project = await served.client.post("/api/projects", json={"title": "Alice's book"}, headers=alice)
    ids["project"] = project.json()["id"]
    chapter = await served.client.post(
        f"/api/projects/{ids['project']}/chapters", json={"outline": "The ferry."}, headers=alice
    )
    assert chapter.status_code == 202, chapter.text
    ids["chapter"], ids["chapter_job"] = chapter.json()["chapter"]["id"], chapter.json()["job"]["id"]
    worker = ActingWorker(served)
    try:
        for job_id in (ids["done"], ids["chapter_job"]):
            await worker.claim(job_id)
            await worker.emit(job_id, "step.finished", step="director", elapsed_s=0.1)
            await worker.complete(job_id, chapter_result(["first", "second"]))
    finally:
        await worker.close()
    versions = await served.client.get(
        f"/api/projects/{ids['project']}/chapters/{ids['chapter']}/versions", headers=alice
    )
    ids["version"] = versions.json()[1]["id"]
    return ids


def _job_routes(ids: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/jobs/{ids['done']}"),
        ("GET", f"/api/jobs/{ids['done']}/events"),
        ("GET", f"/api/novel/status/{ids['done']}"),
        ("GET", f"/api/novel/result/{ids['done']}"),
        ("GET", f"/api/jobs/{ids['chapter_job']}"),
        ("GET", f"/api/jobs/{ids['streamed']}/events"),
    ]


def _project_routes(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    p, c, v = ids["project"], ids["chapter"], ids["version"]
    return [
        ("GET", f"/api/projects/{p}", None),
        ("PATCH", f"/api/projects/{p}", {"title": "Bob's now"}),
        ("GET", f"/api/projects/{p}/chapters", None),
        ("POST", f"/api/projects/{p}/chapters", {"outline": "Bob writes here."}),
        ("GET", f"/api/projects/{p}/chapters/{c}", None),
        ("GET", f"/api/projects/{p}/chapters/{c}/versions", None),
        ("POST", f"/api/projects/{p}/chapters/{c}/versions/{v}/choose", None),
        ("DELETE", f"/api/projects/{p}", None),
    ]


async def test_another_tenants_ids_answer_404_and_change_nothing(authed: tuple[Served, Keys]) -> None:
    served, keys = authed
    ids = await _alices_world(served, keys)
    alice, bob, admin = keys.auth("alice"), keys.auth("bob"), keys.auth("admin")

    for method, path in _job_routes(ids):
        r = await served.client.request(method, path, headers=bob)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "alice" not in r.text and "first" not in r.text  # nothing of hers, not even her name
        assert await _status(served, method, path, alice) == 200, path
    for job in ("waiting", "done"):
        cancel = await served.client.delete(f"/api/jobs/{ids[job]}", headers=bob)
        assert cancel.status_code == 404
    waiting = await served.queue.get(ids["waiting"])  # running: the acting worker claimed it
    assert waiting.status.value == "running" and not waiting.cancel_requested  # Bob cancelled nothing

    for method, path, body in _project_routes(ids):
        r = await served.client.request(method, path, headers=bob, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert (await served.client.get("/api/projects", headers=bob)).json() == []
    mine = await served.client.get(f"/api/projects/{ids['project']}", headers=alice)
    assert mine.status_code == 200 and mine.json()["title"] == "Alice's book"
    chapters = (await served.client.get(f"/api/projects/{ids['project']}/chapters", headers=alice)).json()
    assert len(chapters) == 1 and chapters[0]["current_version_id"] is None  # Bob chose nothing

    # The same idempotency keys are Bob's own: new jobs, never Alice's.
    again = await served.client.post(
        "/api/novel/generate",
        json={"novel_input": novel_input("done"), "idempotency_key": "a-1"},
        headers=bob,
    )
    assert again.status_code == 200 and again.json()["task_id"] != ids["done"]
    streamed = await _first_frame(
        served, {**bob, "Idempotency-Key": "a-stream"}, {"novel_input": novel_input("streamed")}
    )
    assert streamed != ids["streamed"]
    assert (await served.queue.get(streamed)).tenant == "bob"
    repeat = await _first_frame(
        served, {**alice, "Idempotency-Key": "a-stream"}, {"novel_input": novel_input("streamed")}
    )
    assert repeat == ids["streamed"]

    # An admin reads any tenant's jobs, and changes none; projects stay their tenant's.
    for method, path in _job_routes(ids):
        assert await _status(served, method, path, admin) == 200, path
    result = (await served.client.get(f"/api/novel/result/{ids['done']}", headers=admin)).json()
    assert result["chapter_content"] == "first"
    assert (await served.client.delete(f"/api/jobs/{ids['waiting']}", headers=admin)).status_code == 404
    assert not (await served.queue.get(ids["waiting"])).cancel_requested
    for method, path, body in _project_routes(ids):
        r = await served.client.request(method, path, headers=admin, json=body)
        assert r.status_code == 404, (method, path)

    # Alice herself can do all of it.
    cancelled = await served.client.delete(f"/api/jobs/{ids['waiting']}", headers=alice)
    assert cancelled.status_code == 200
    assert (await served.queue.get(ids["waiting"])).cancel_requested
    chosen = await served.client.post(
        f"/api/projects/{ids['project']}/chapters/{ids['chapter']}/versions/{ids['version']}/choose",
        headers=alice,
    )
    assert chosen.status_code == 200 and chosen.json()["chosen"] is True
