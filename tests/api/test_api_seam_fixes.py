"""What a new user hit around the API: /docs offline, a 404 logged at every start, dead letters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storyloom.jobs.models import JobStatus
from support.api_server import Served, serve_app


async def test_docs_page_needs_no_network(api: Served) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text) + re.findall(
        r"url: '([^']+)'", page.text
    )
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from a CDN
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert (await api.client.get(f"/docs/assets/{asset}")).status_code == 200


async def test_start_up_logs_no_warm_up_404(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with serve_app(tmp_path / "fresh") as served:
        assert (await served.client.get("/api/health")).status_code in (200, 503)
    out = capsys.readouterr().out
    assert "/api/health" in out  # requests are logged...
    assert "warm-up" not in out  # ...but not our own warm-up


async def test_dead_letters_are_listed_and_retried(api: Served) -> None:
    failed = await api.queue.submit("novel", {"input": {"chapter_outline": "x"}}, max_attempts=1)
    ok = await api.queue.submit("novel", {"input": {"chapter_outline": "y"}})
    [claimed] = [j for j in await api.queue.claim("w", limit=10, lease_s=30) if j.id == failed.id]
    assert await api.queue.fail(claimed.id, "w", "boom", retryable=False) is JobStatus.FAILED

    page = (await api.client.get("/api/jobs", params={"status": "failed"})).json()
    assert [j["id"] for j in page["jobs"]] == [failed.id] and page["total"] == 1
    assert page["jobs"][0]["error"] == "boom" and page["jobs"][0]["app"] == "novel"
    everything = (await api.client.get("/api/jobs", params={"kind": "novel", "limit": 1})).json()
    assert everything["total"] == 2 and len(everything["jobs"]) == 1
    bad = await api.client.get("/api/jobs", params={"status": "sleeping"})
    assert bad.status_code == 422 and "status" in bad.json()["message"]

    again = await api.client.post(f"/api/jobs/{failed.id}/retry")
    assert again.status_code == 200 and again.json()["status"] == "pending"
    refused = await api.client.post(f"/api/jobs/{ok.id}/retry")
    assert refused.status_code == 409 and "only failed or cancelled" in refused.json()["message"]
    assert (await api.client.post("/api/jobs/nope/retry")).status_code == 404
    kinds = [e.kind for e in await api.queue.events(failed.id)]
    assert kinds[-2:] == ["job.failed", "job.retried"]
