"""The Planner's web searches over real HTTP: answered, cached, or degraded with the job completed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storyloom.registry import AppRegistry
from support.api_server import serve_app
from support.seed_apps import fake_search, finished, settings_worker, worker_settings


async def _debate(
    tmp_path: Path, sim: Any, mode: str, messages: list[str]
) -> tuple[list[dict[str, Any]], Any]:
    registry = AppRegistry.discover()
    async with fake_search() as search, serve_app(tmp_path, registry=registry) as served:
        search.mode = mode
        config = worker_settings(
            tmp_path, sim.url, search_backend="searxng", search_url=search.url,
            tool_policies={"web_search": {"timeout_s": 0.5, "retries": 1, "backoff_s": 0.05}},
        )  # fmt: skip
        jobs = []
        async with settings_worker(served, registry, config):
            for message in messages:
                body = {"input": {"message": message, "search": "always", "max_rounds": 1}}
                created = await served.client.post("/api/apps/debate/jobs", json=body)
                jobs.append(await finished(served, created.json()["id"]))
        return jobs, search


async def test_searches_feed_the_critics_and_repeat_from_cache(tmp_path: Path, sim: Any) -> None:
    (first, again), search = await _debate(tmp_path, sim, "ok", ["Is remote work here to stay?"] * 2)
    assert first["status"] == again["status"] == "completed"
    report = first["result"]["search"]
    assert report["calls"] == 3 and report["degraded"] == 0 and report["findings"]
    assert first["usage"]["tool_calls"] == 3 and search.calls == 3
    # The same question again: its searches come from the 600 s cache, the API is not called.
    assert again["result"]["search"]["cached"] == 3 and search.calls == 3


@pytest.mark.parametrize("mode", ["error_5xx", "error_429", "hang"])
async def test_search_down_degrades_the_answer_not_the_job(tmp_path: Path, sim: Any, mode: str) -> None:
    (job,), search = await _debate(tmp_path, sim, mode, ["Should we rewrite it in Go?"])
    assert job["status"] == "completed", job
    report = job["result"]["search"]
    assert report["calls"] == report["degraded"] == 3 and report["findings"] == []
    assert search.calls >= 3 and job["text"].strip()
    assert any(d["step"] == "research" and "searches degraded" in d["reason"] for d in job["degraded"])


@pytest.mark.parametrize("fault", [None, "error_5xx", "error_429"])
async def test_the_simulators_search_backend(tmp_path: Path, sim: Any, fault: str | None) -> None:
    """The default backend: the simulator's POST /v1/search, with its own faults."""
    if fault is not None:
        sim.configure(search={"faults": {fault: 1.0}, "retry_after_s": 0.05})
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, registry=registry) as served:
        config = worker_settings(
            tmp_path, sim.url, search_url=sim.url,
            tool_policies={"web_search": {"timeout_s": 0.5, "retries": 1, "backoff_s": 0.05}},
        )  # fmt: skip
        async with settings_worker(served, registry, config):
            body = {"input": {"message": "Do cats need baths?", "search": "always", "max_rounds": 1}}
            created = await served.client.post("/api/apps/debate/jobs", json=body)
            job = await finished(served, created.json()["id"])
    assert job["status"] == "completed", job
    report = job["result"]["search"]
    assert report["calls"] == 3
    assert report["degraded"] == (0 if fault is None else 3)
    assert bool(report["findings"]) is (fault is None)
    assert sim.stats()["search"]["requests"] >= 3
