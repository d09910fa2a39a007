"""Nova over loopback HTTP: sub-agents in parallel with web and platform searches, the post
streamed; search down → degraded but written; model down → fallback model → degraded stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storyloom.apps.nova.tools import SEARCH_URL_VARIABLE
from storyloom.registry import AppRegistry
from support.api_server import serve_app
from support.seed_apps import fake_search, finished, settings_worker, worker_settings

ALL = ["profile", "insight", "facts", "hitpoint"]


async def _post(
    tmp_path: Path, sim: Any, mode: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> tuple[dict[str, Any], Any]:
    registry = AppRegistry.discover()
    async with fake_search() as search, serve_app(tmp_path, registry=registry) as served:
        search.mode = mode
        monkeypatch.setenv(SEARCH_URL_VARIABLE, search.url)
        config = worker_settings(
            tmp_path, sim.url, search_backend="searxng", search_url=search.url,
            tool_policies={name: {"timeout_s": 0.5, "retries": 1, "backoff_s": 0.05}
                           for name in ("web_search", "xiaohongshu_search", "douyin_search")},
            **settings,
        )  # fmt: skip
        async with settings_worker(served, registry, config):
            body = {"input": {"request": "秋冬护手霜推荐，适合办公室", "agents": ALL}}
            created = await served.client.post("/api/apps/nova/jobs", json=body)
            assert created.status_code == 202, created.text
            job = await finished(served, created.json()["id"])
            events = (
                await served.client.get(f"/api/jobs/{job['id']}/events", params={"follow": "false"})
            ).text
        return job, (search, events)


async def test_the_post_is_written_from_four_agents_searching_in_parallel(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, (search, _) = await _post(tmp_path, sim, "ok", monkeypatch)
    assert job["status"] == "completed", job
    post = job["result"]
    assert post["agents_run"] == ALL and post["title"].strip() and post["body"].strip()
    assert job["text"].startswith(post["title"]) and post["degraded"] is False and job["degraded"] == []
    # profile: xhs; insight: xhs + douyin; facts: web; hitpoint: douyin — five searches, all real HTTP.
    assert post["search"]["calls"] == 5 and search.calls == 5 and post["search"]["degraded"] == 0
    assert job["usage"]["tool_calls"] == 5
    assert job["usage"]["calls"] == 1 + 4 + 1 + 1  # supervisor, four agents, headline, writer


@pytest.mark.parametrize("mode", ["error_5xx", "error_429", "hang"])
async def test_search_down_degrades_and_the_post_is_still_written(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    job, (search, _) = await _post(tmp_path, sim, mode, monkeypatch)
    assert job["status"] == "completed", job
    post = job["result"]
    assert post["body"].strip() and post["degraded"] is True
    assert post["search"]["degraded"] == post["search"]["calls"] == 5
    assert search.calls >= 5  # each search was really tried (retried once) before degrading
    assert any("searches degraded" in d["reason"] for d in job["degraded"])


async def test_model_down_falls_back_then_answers_degraded(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    deployments = json.dumps(
        {
            "deployments": [
                {"model": "sim-writer", "base_url": sim.url},
                {"model": "sim-backup", "base_url": sim.url},
            ],
            "fallbacks": {"sim-writer": ["sim-backup"]},
        }
    )
    sim.configure(models={"sim-writer": {"faults": {"error_5xx": 1.0}}})
    job, _ = await _post(tmp_path, sim, "ok", monkeypatch, deployments=deployments, step_retry_budget_s=3.0)
    assert job["status"] == "completed", job
    assert job["result"]["degraded"] is False, job["degraded"]
    assert job["result"]["body"].strip()  # the fallback model wrote it
    per_model = sim.stats()["per_model"]
    assert per_model["sim-writer"]["completed"] == 0
    assert per_model["sim-backup"]["completed"] == job["usage"]["calls"] == 7  # every call, on the fallback
    # Now both are down: the writer's stand-in is the team's notes, and it says so.
    sim.configure(models={"sim-backup": {"faults": {"error_5xx": 1.0}}})
    job, _ = await _post(
        tmp_path / "2", sim, "ok", monkeypatch, deployments=deployments, step_retry_budget_s=1.0
    )
    assert job["status"] == "completed", job
    assert job["result"]["degraded"] is True
    assert "不可用" in job["result"]["body"]
    assert any(d["step"] == "write" for d in job["degraded"])


def _events(sse: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: ")]
