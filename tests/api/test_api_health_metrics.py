"""Health (503 when degraded), the seed's JSON metrics and Prometheus names."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyloom.api.services import ApiOptions
from storyloom.store.database import Database
from support.api_server import ActingWorker, Served, chapter_result, free_port, novel_input, serve_app


async def test_health_follows_the_supervisors_worker_count(tmp_path: Path) -> None:
    live = {"n": 2}

    async def count() -> int:
        return live["n"]

    async with serve_app(tmp_path, ApiOptions(worker_count=count, min_live_workers=1)) as api:
        ok = await api.client.get("/api/health")
        assert ok.status_code == 200 and ok.json()["workers"] == 2 and ok.json()["status"] == "healthy"
        live["n"] = 0
        bad = await api.client.get("/api/health")
        assert bad.status_code == 503
        assert bad.json()["status"] == "degraded" and "live workers" in bad.json()["reasons"][0]


async def test_health_without_supervisor_is_degraded_when_due_jobs_stall(tmp_path: Path) -> None:
    async with serve_app(tmp_path, ApiOptions(stall_s=0.2)) as api:
        assert (await api.client.get("/api/health")).status_code == 200
        await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
        import asyncio

        await asyncio.sleep(0.4)
        bad = await api.client.get("/api/health")
        assert bad.status_code == 503 and bad.json()["queue_size"] == 1


async def test_health_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    dead = Database.from_url(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    try:
        async with serve_app(tmp_path, database=dead) as api:
            r = await api.client.get("/api/health")
            assert r.status_code == 503 and r.json()["database"] == "unreachable"
            submit = await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
            assert submit.status_code == 503 and "retry-after" in submit.headers
    finally:
        await dead.close()


@pytest.mark.parametrize(
    "name",
    [
        "novel_generation_requests_total",
        "novel_generation_duration_seconds_bucket",
        "novel_active_workers",
        "novel_queue_size",
        "storyloom_event_lag_seconds",
        "storyloom_api_submissions_total",
    ],
)
async def test_prometheus_exposes_the_seed_names(api: Served, name: str) -> None:
    text = (await api.client.get("/metrics")).text
    assert name in text


async def test_prometheus_counts_finished_jobs_from_the_database(api: Served) -> None:
    async def submit(outline: str) -> str:
        r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input(outline)})
        return str(r.json()["task_id"])

    ids = [await submit("one"), await submit("two")]
    worker = ActingWorker(api)
    try:
        for job_id in ids:
            await worker.claim(job_id)
            await worker.complete(job_id, chapter_result(["x"]))
    finally:
        await worker.close()
    await submit("three")
    text = (await api.client.get("/metrics")).text
    assert 'novel_generation_requests_total{status="completed"} 2.0' in text
    assert "novel_queue_size 1.0" in text
    assert "novel_generation_duration_seconds_count 2.0" in text
    assert 'storyloom_api_submissions_total{outcome="accepted"}' in text


def test_every_dependency_is_async_so_none_runs_in_the_thread_pool() -> None:
    import inspect

    from storyloom.api import deps

    for name in ("get_services", "get_tenant", "get_after", "bind_job_id"):
        assert inspect.iscoroutinefunction(getattr(deps, name)), name
