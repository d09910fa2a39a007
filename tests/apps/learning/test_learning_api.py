"""The learning app over loopback HTTP: chat inline with background tasks behind it, the
immediate path (`?wait=`), scheduled kinds and the batch export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storyloom.apps.learning.routes import parse_wait
from storyloom.apps.learning.store import LearningStore
from storyloom.apps.learning.vectors import cosine
from storyloom.errors import InputError
from storyloom.registry import AppRegistry
from support.api_server import Served, serve_app
from support.seed_apps import finished, settings_worker, worker_settings


@pytest.fixture
async def live(tmp_path: Path, sim: Any) -> AsyncIterator[Served]:
    registry = AppRegistry.discover()
    async with (
        serve_app(tmp_path, registry=registry) as served,
        settings_worker(served, registry, worker_settings(tmp_path, sim.url)),
    ):
        yield served


async def _chat(served: Served, message: str, session_id: str) -> dict[str, Any]:
    r = await served.client.post(
        "/api/learning/chat", json={"message": message, "session_id": session_id, "topic": "entropy"}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_chat_answers_inline_and_queues_consolidation_and_analysis(live: Served) -> None:
    body = await _chat(live, "Entropy is just disorder, right?", "s1")
    assert body["answer"].strip() and body["job"]["status"] == "completed"
    assert set(body["background"]) == {"consolidate", "analyze"}
    for kind, job_id in body["background"].items():
        job = await finished(live, job_id, timeout_s=10)
        assert job["status"] == "completed" and job["kind"] == f"learning.{kind}"
        assert job["finished_at"] - job["created_at"] <= 5.0  # seed 004's background target
    memory = (await live.client.get("/api/learning/sessions/s1")).json()
    assert len(memory["memories"]) == 1 and memory["memories"][0]["summary"].strip()
    # Vector storage: the consolidation queued the memory's embedding, made through the gateway.
    consolidated = await finished(live, body["background"]["consolidate"])
    embedded = await finished(live, consolidated["result"]["embed_job"], timeout_s=10)
    assert embedded["status"] == "completed" and embedded["result"]["dims"] > 0, embedded
    assert embedded["result"]["memory_id"] == memory["memories"][0]["id"]
    vector = await LearningStore(live.db).vector("default", memory["memories"][0]["id"])
    assert vector is not None and len(vector) == embedded["result"]["dims"]
    assert abs(cosine(vector, vector) - 1.0) < 1e-9
    assert embedded["usage"]["calls"] == 1  # metered like any model call
    assert 0 <= memory["analyses"][0]["understanding"] <= 100
    # The next answer recalls the consolidated memory (its prompt carries it; the step's input shows it).
    again = await _chat(live, "So what is it then?", "s1")
    assert again["answer"].strip()
    assert (await live.client.get("/api/learning/sessions/nobody")).status_code == 404


async def test_the_immediate_path_answers_inline_or_gives_the_job(live: Served) -> None:
    quick = await live.client.post("/api/learning/tasks/cost_stats?wait=5s", json={"payload": {}})
    assert quick.status_code == 200, quick.text
    assert quick.json()["status"] == "completed" and "tenants" in quick.json()["result"]
    slow = await live.client.post("/api/learning/tasks/export?wait=1ms", json={"payload": {}})
    assert slow.status_code == 202 and slow.json()["status"] in ("pending", "running")
    assert (await finished(live, slow.json()["id"]))["status"] == "completed"
    bad = await live.client.post("/api/learning/tasks/export?wait=soon", json={})
    assert 400 <= bad.status_code < 500 and "wait must look like" in bad.text
    unknown = await live.client.post("/api/learning/tasks/train?wait=1s", json={})
    assert unknown.status_code == 404 and "no learning task kind" in unknown.text


async def test_export_is_a_parent_with_one_child_per_session(live: Served) -> None:
    for session in ("a", "b"):
        body = await _chat(live, f"Explain entropy like I am five ({session})", session)
        await finished(live, body["background"]["consolidate"])
        await finished(live, body["background"]["analyze"])
    r = await live.client.post("/api/learning/tasks/export?wait=20s", json={"payload": {}})
    assert r.status_code == 200, r.text
    export = r.json()
    assert export["status"] == "completed"
    assert [s["session_id"] for s in export["result"]["sessions"]] == ["a", "b"]
    assert export["result"]["memories"] == 2 and export["result"]["analyses"] == 2
    for part in export["result"]["parts"]:
        child = await live.queue.get(part)
        assert child.parent_id == export["id"] and child.kind == "learning.export_part"
    cleaned = await live.client.post(
        "/api/learning/tasks/cleanup?wait=5s", json={"payload": {"retention_days": 0}}
    )
    assert cleaned.json()["result"]["removed"]["memories"] == 2
    assert (await live.client.get("/api/learning/sessions/a")).status_code == 404


def test_wait_is_parsed_strictly() -> None:
    assert parse_wait("2s") == 2.0 and parse_wait("500ms") == 0.5 and parse_wait("1.5") == 1.5
    with pytest.raises(InputError, match="at most"):
        parse_wait("31s")


async def test_a_session_is_its_tenants(tmp_path: Path, sim: Any) -> None:
    from storyloom.api.services import ApiOptions
    from support.api_server import Keys

    registry = AppRegistry.discover()
    async with serve_app(tmp_path, ApiOptions(auth=True, heartbeat_s=0.5), registry=registry) as served:
        keys = await Keys.make(served.db)
        async with settings_worker(served, registry, worker_settings(tmp_path, sim.url)):
            alice, bob = keys.auth("alice"), keys.auth("bob")
            r = await served.client.post(
                "/api/learning/chat", json={"message": "What is a derivative?"}, headers=alice
            )
            assert r.status_code == 200, r.text
            await finished(served, r.json()["background"]["consolidate"], headers=alice)
            assert (
                await served.client.get("/api/learning/sessions/default", headers=alice)
            ).status_code == 200
            assert (await served.client.get("/api/learning/sessions/default", headers=bob)).status_code == 404
            theirs = await served.client.post("/api/learning/tasks/export?wait=10s", json={}, headers=bob)
            assert theirs.status_code == 200 and theirs.json()["result"]["sessions"] == []
            job_id = r.json()["background"]["analyze"]
            assert (await served.client.get(f"/api/jobs/{job_id}", headers=bob)).status_code == 404
