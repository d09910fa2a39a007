"""The seed's /api/novel contract, idempotency, and the error answers (422, 413, 404, 429)."""

from __future__ import annotations

from pathlib import Path

from storyloom.api.services import ApiOptions
from support.api_server import ActingWorker, Served, chapter_result, novel_input, serve_app


async def test_generate_status_result_round_trip(api: Served) -> None:
    r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input(), "priority": 7})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"task_id", "status", "message"} and body["status"] == "pending"
    task = body["task_id"]

    status = (await api.client.get(f"/api/novel/status/{task}")).json()
    assert status["status"] == "pending" and status["priority"] == 7
    pending = (await api.client.get(f"/api/novel/result/{task}")).json()
    assert pending["status"] == "pending" and pending["chapter_content"] is None

    job = await api.queue.get(task)
    assert job.kind == "novel"
    assert job.payload["input"]["chapter_outline"] == novel_input()["chapter_outline"]
    assert job.payload["input"]["versions"] == 2  # settings' default version count

    worker = ActingWorker(api)
    try:
        await worker.claim(task)
        await worker.complete(task, chapter_result(["first text", "second text"], chosen=2))
    finally:
        await worker.close()
    done = (await api.client.get(f"/api/novel/result/{task}")).json()
    assert done["status"] == "completed"
    assert done["chapter_content"] == "second text"
    assert isinstance(done["execution_time"], float) and done["execution_time"] >= 0

    metrics = (await api.client.get("/api/metrics")).json()
    assert metrics["total_executions"] == 1 and metrics["success_rate"] == 1.0
    assert metrics["queue_size"] == 0


async def test_idempotency_key_header_and_body_yield_one_job(api: Served) -> None:
    body = {"novel_input": novel_input(), "priority": 5}
    first = await api.client.post("/api/novel/generate", json=body, headers={"Idempotency-Key": "abc"})
    again = await api.client.post("/api/novel/generate", json=body, headers={"Idempotency-Key": "abc"})
    assert first.json()["task_id"] == again.json()["task_id"]
    assert "earlier" in again.json()["message"]
    via_body = await api.client.post("/api/novel/generate", json={**body, "idempotency_key": "abc"})
    assert via_body.json()["task_id"] == first.json()["task_id"]
    other = await api.client.post("/api/novel/generate", json=body, headers={"Idempotency-Key": "xyz"})
    assert other.json()["task_id"] != first.json()["task_id"]
    stats = await api.queue.stats()
    assert stats.queued == 2


async def test_bad_input_is_422_with_field_messages(api: Served) -> None:
    r = await api.client.post("/api/novel/generate", json={"novel_input": {"genre": "x"}, "priority": 12})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["detail"]}
    assert {"novel_input.chapter_outline", "priority"} <= fields
    assert r.json()["message"].startswith("invalid request:")
    blank = await api.client.post("/api/novel/generate", json={"novel_input": novel_input(outline="   ")})
    assert blank.status_code == 422
    assert "must not be empty" in blank.json()["message"]
    not_json = await api.client.post(
        "/api/novel/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422


async def test_oversized_bodies_are_413(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(max_body_bytes=2000)) as api:
        big = {"novel_input": novel_input(outline="x" * 5000)}
        r = await api.client.post("/api/novel/generate", json=big)
        assert r.status_code == 413
        assert "larger than 2000 bytes" in r.json()["detail"]

        async def chunks():  # no Content-Length: the limit applies while the body streams in
            for _ in range(10):
                yield b" " * 500

        streamed = await api.client.post(
            "/api/novel/generate", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert (await api.queue.stats()).queued == 0


async def test_unknown_task_is_404_everywhere(api: Served) -> None:
    for method, path in [
        ("GET", "/api/novel/status/nope"),
        ("GET", "/api/novel/result/nope"),
        ("GET", "/api/jobs/nope"),
        ("DELETE", "/api/jobs/nope"),
        ("GET", "/api/jobs/nope/events"),
    ]:
        r = await api.client.request(method, path)
        assert r.status_code == 404, path
        assert "nope" in r.json()["detail"]


async def test_full_queue_is_429_with_retry_after_and_nothing_accepted_is_lost(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(max_pending=2)) as api:
        ids = []
        for i in range(2):
            body = {"novel_input": novel_input(f"chapter {i}"), "idempotency_key": f"k{i}"}
            r = await api.client.post("/api/novel/generate", json=body)
            assert r.status_code == 200
            ids.append(r.json()["task_id"])
        full = await api.client.post("/api/novel/generate", json={"novel_input": novel_input("one too many")})
        assert full.status_code == 429
        assert int(full.headers["retry-after"]) >= 1
        # A repeat of an accepted submission still answers with its job, full queue or not.
        repeat = await api.client.post(
            "/api/novel/generate", json={"novel_input": novel_input(), "idempotency_key": "k0"}
        )
        assert repeat.status_code == 200 and repeat.json()["task_id"] == ids[0]
        for job_id in ids:
            assert (await api.client.get(f"/api/novel/status/{job_id}")).json()["status"] == "pending"
        assert (await api.queue.stats()).queued == 2


async def test_openapi_docs_are_served(api: Served) -> None:
    assert (await api.client.get("/docs")).status_code == 200
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    generate_params = {p["name"] for p in paths["/api/novel/generate"]["post"]["parameters"]}
    assert generate_params == {"Idempotency-Key", "x-tenant"}
    for path in (
        "/api/novel/generate",
        "/api/novel/generate/stream",
        "/api/novel/status/{task_id}",
        "/api/novel/result/{task_id}",
        "/api/jobs/{job_id}/events",
        "/api/projects/{project_id}/chapters/{chapter_id}/versions/{version_id}/choose",
        "/api/health",
        "/api/metrics",
    ):
        assert path in paths, path
