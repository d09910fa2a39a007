"""Helpers of the seed apps' tests: a search API that can fail on demand, and a worker built from
settings (the gateway with fallbacks, the tools with their runtime) in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from storyloom.config import Settings
from storyloom.registry import AppRegistry
from support.api_server import Served, free_port


@dataclass
class FakeSearch:
    """SearxNG's JSON API (`GET /search?q=..&format=json`) and the simulator's (`POST /search`),
    answering `mode`: ok, error_5xx, error_429 or hang."""

    mode: str = "ok"
    url: str = ""
    calls: int = 0
    queries: list[str] = field(default_factory=list)

    async def _answer(self, query: str, source: str) -> web.Response:
        self.calls += 1
        self.queries.append(query)
        if self.mode == "error_5xx":
            return web.json_response({"error": "backend down"}, status=503)
        if self.mode == "error_429":
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
        if self.mode == "hang":
            await asyncio.sleep(3600)
        results = [
            {"title": f"{query} {i}", "url": f"https://{source}.example/{i}", "content": f"about {query}"}
            for i in range(1, 4)
        ]
        for hit in results:
            hit["snippet"] = hit["content"]
        return web.json_response({"query": query, "results": results})

    async def searxng(self, request: web.Request) -> web.Response:
        return await self._answer(request.query.get("q", ""), "web")

    async def sim(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await self._answer(str(body.get("query", "")), str(body.get("source", "web")))


@asynccontextmanager
async def fake_search() -> AsyncIterator[FakeSearch]:
    fake = FakeSearch()
    app = web.Application()
    app.router.add_get("/search", fake.searxng)
    app.router.add_post("/search", fake.sim)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def worker_settings(data_dir: Path, sim_url: str, **fields: Any) -> Settings:
    return Settings(data_dir=data_dir, base_url=sim_url, model="sim-writer", _env_file=None, **fields)  # type: ignore[call-arg]


@asynccontextmanager
async def settings_worker(served: Served, registry: AppRegistry, settings: Settings) -> AsyncIterator[Any]:
    """A real worker as `storyloom worker` builds it (gateway, fallbacks, tool runtime)."""
    from storyloom.jobs.worker import Worker, WorkerConfig
    from storyloom.runner import app_handlers, build_services

    services = build_services(served.db, settings, registry)
    worker = Worker(
        served.db,
        app_handlers(registry),
        config=WorkerConfig(concurrency=50, heartbeat_s=0.2, poll_s=0.05, schedule_every_s=None),
        services=services,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await services.aclose()


async def finished(
    served: Served, job_id: str, timeout_s: float = 60, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job: dict[str, Any] = (await served.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("completed", "failed", "cancelled", "dead"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)
