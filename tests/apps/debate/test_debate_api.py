"""The debate app over real loopback HTTP: a worker in the test's loop, the simulator as provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.api.services import ApiOptions
from storyloom.registry import AppRegistry
from support.api_server import Keys, Served, running_worker, serve_app


@pytest.fixture
async def live(tmp_path: Path, sim: Any) -> AsyncIterator[Served]:
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, registry=registry) as served, running_worker(served, registry, sim.url):
        yield served


async def _finished(
    served: Served, job_id: str, timeout_s: float = 30, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job: dict[str, Any] = (await served.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("completed", "failed", "cancelled", "dead"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)


async def _say(served: Served, message: str, **fields: Any) -> dict[str, Any]:
    body = {"input": {"message": message, "search": "never", **fields}}
    created = await served.client.post("/api/apps/debate/jobs", json=body)
    assert created.status_code == 202, created.text
    return await _finished(served, created.json()["id"])


async def test_a_conversation_keeps_its_history_across_messages(live: Served) -> None:
    first = await _say(live, "Should our team adopt Rust for the billing service?", session_id="s1")
    assert first["status"] == "completed", first
    result = first["result"]
    assert first["text"].strip() and first["text"] == result["text"] and result["session_id"] == "s1"
    assert 1 <= result["rounds"] <= 3
    assert result["critiques"] == 2 * result["rounds"]  # 2 critics a round, in parallel
    assert first["usage"]["calls"] == 2 + 3 * result["rounds"]  # plan, report; 2 critics + host a round
    second = await _say(live, "And what about hiring for it?", session_id="s1")
    assert second["status"] == "completed"
    conv = (await live.client.get("/api/debate/conversations/s1")).json()
    assert [t["role"] for t in conv["turns"]] == ["user", "assistant", "user", "assistant"]
    assert conv["turns"][2]["content"] == "And what about hiring for it?"
    assert conv["turns"][3]["content"] == second["text"]
    listed = (await live.client.get("/api/debate/conversations")).json()
    assert listed[0]["id"] == "s1" and listed[0]["messages"] == 4


async def test_another_tenant_cannot_read_a_conversation(tmp_path: Path, sim: Any) -> None:
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, ApiOptions(auth=True, heartbeat_s=0.5), registry=registry) as served:
        keys = await Keys.make(served.db)
        async with running_worker(served, registry, sim.url):
            body = {"input": {"message": "Is nuclear power green?", "session_id": "mine", "search": "never"}}
            created = await served.client.post("/api/apps/debate/jobs", json=body, headers=keys.auth("alice"))
            assert created.status_code == 202, created.text
            done = await _finished(served, created.json()["id"], headers=keys.auth("alice"))
            assert done["status"] == "completed"
        mine = await served.client.get("/api/debate/conversations/mine", headers=keys.auth("alice"))
        assert mine.status_code == 200 and len(mine.json()["turns"]) == 2
        theirs = await served.client.get("/api/debate/conversations/mine", headers=keys.auth("bob"))
        assert theirs.status_code == 404 and "no conversation" in theirs.json()["message"]
        listed = await served.client.get("/api/debate/conversations", headers=keys.auth("bob"))
        assert listed.status_code == 200 and listed.json() == []
        bad = await served.client.post(
            "/api/apps/debate/jobs",
            json={"input": {"message": "x", "max_rounds": 7}},
            headers=keys.auth("bob"),
        )
        assert bad.status_code == 422 and "max_rounds" in bad.text


async def test_a_long_conversation_is_summarized_to_the_budget(live: Served) -> None:
    long = "We compared the options at length. " * 60  # ~420 tokens a message
    for i in range(3):
        done = await _say(live, f"{i}: {long}", session_id="long", max_rounds=1, critics=1)
        assert done["status"] == "completed"
    last = await _say(live, "So, which one?", session_id="long", max_rounds=1, critics=1)
    assert last["result"]["history_summarized"] is True
    conv = (await live.client.get("/api/debate/conversations/long")).json()
    assert conv["summary"].strip() and conv["summarized_upto"] >= 2
