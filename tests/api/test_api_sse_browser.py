"""A browser's own EventSource (headless Chromium) against the live API: it hears each kind with
addEventListener, and once the job has ended it stops, because the reconnect gets a 204."""

from __future__ import annotations

import shutil

import pytest

from support.api_server import ActingWorker, Served, chapter_result, novel_input

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Resolves once the EventSource is CLOSED (it gave up for good), or after 12 s with what it saw.
_FOLLOW = """
(path) => new Promise((resolve) => {
  const seen = [];
  let opens = 0;
  const source = new EventSource(path);
  source.onmessage = (e) => seen.push("unnamed:" + e.data);
  for (const kind of ["job.submitted", "job.started", "step.delta", "job.completed"]) {
    source.addEventListener(kind, (e) => seen.push(kind + "#" + e.lastEventId));
  }
  source.onopen = () => { opens += 1; };
  const done = (why) => resolve({ seen, opens, why, state: source.readyState });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) done("closed"); };
  setTimeout(() => { source.close(); done("still reconnecting"); }, 12000);
})
"""


async def test_event_source_listens_per_kind_and_stops_after_the_end(api: Served) -> None:
    r = await api.client.post("/api/novel/generate", json={"novel_input": novel_input()})
    job_id = r.json()["task_id"]
    worker = ActingWorker(api)
    try:
        await worker.claim(job_id)
        await worker.emit(job_id, "step.delta", step="versions/v1/plot", text="Lin waits.")
        await worker.complete(job_id, chapter_result(["Lin waits."]))
    finally:
        await worker.close()
    kinds = [e.kind for e in await api.queue.events(job_id, 0, 100)]

    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(f"{api.url}/api/health")  # same origin as the stream
            result = await page.evaluate(_FOLLOW, f"/api/jobs/{job_id}/events")
        finally:
            await browser.close()

    assert result["why"] == "closed", result
    assert result["opens"] == 1  # the reconnect got 204 and never opened
    heard = [entry.split("#")[0] for entry in result["seen"]]
    assert heard == [k for k in kinds if k in ("job.submitted", "job.started", "step.delta", "job.completed")]
    assert not [e for e in result["seen"] if e.startswith("unnamed:")]
    assert result["seen"][-1] == f"job.completed#{len(kinds)}"
