"""What a new user hit: a project chapter with no chosen version after its job finished, and
chapters queued together that lost their seams. The API and a real worker, against the simulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from storyloom.apps.novel.projects import ProjectStore
from storyloom.registry import AppRegistry
from support.api_server import running_worker, serve_app


async def _wait_done(client: Any, job_ids: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [(await client.get(f"/api/jobs/{j}")).json()["status"] for j in job_ids]
        if all(s in ("completed", "failed", "cancelled") for s in states):
            assert states == ["completed"] * len(job_ids), states
            return
        await asyncio.sleep(0.1)
    raise AssertionError("chapter jobs did not finish")


async def test_chapters_queued_together_are_chosen_and_keep_their_seams(tmp_path: Path, sim: Any) -> None:
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, registry=registry) as served:
        client = served.client
        project = (await client.post("/api/projects", json={"title": "Road", "language": "en"})).json()
        job_ids, chapter_ids = [], []
        for index, outline in enumerate(
            ("Mara leaves the harbor.", "Mara crosses the marsh.", "Mara reaches the city."), 1
        ):
            body = {"index": index, "outline": outline, "target_length": 200, "versions": 2}
            answer = await client.post(f"/api/projects/{project['id']}/chapters", json=body)
            assert answer.status_code == 202, answer.text
            job_ids.append(answer.json()["job"]["id"])
            chapter_ids.append(answer.json()["chapter"]["id"])
        async with running_worker(served, registry, sim.url):
            await _wait_done(client, job_ids)
        store = ProjectStore(served.db)
        summaries = []
        for job_id, chapter_id in zip(job_ids, chapter_ids, strict=True):
            chapter = await store.get_chapter(chapter_id)
            assert chapter is not None and chapter.current_version_id is not None
            versions = await store.list_versions(chapter_id)
            chosen = [v for v in versions if v.chosen]
            assert len(chosen) == 1 and chosen[0].id == chapter.current_version_id
            seed = (await client.get(f"/api/novel/result/{job_id}")).json()
            assert seed["chapter_content"] == chosen[0].text  # the judge's pick is the chapter's text
            summaries.append(chapter.summary)
        results = [(await client.get(f"/api/jobs/{j}")).json()["result"] for j in job_ids]
        assert results[0]["previous_summary"] is None
        assert results[1]["previous_summary"] == summaries[0] and summaries[0]
        assert results[2]["previous_summary"] == summaries[1] and summaries[1]
