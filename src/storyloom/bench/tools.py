"""Tools under their own limits (`storyloom bench tools --json`): seed 003's numbers on 2 cores.

500 debate conversations against `storyloom serve` with 3 worker processes, started over
`ramp_s` (30 s) with the seed's 5 s per agent call, so about all 500 are open at once; 30% of them
search (three queries each, on topics drawn from a small pool so some repeat, as real questions
do), against a `web_search` limited to 100 calls a minute and 50 at once: a demand well above the
seed's 180/min (`--ramp-s 150` with the same 450 searches is the seed's rate). The
search API is a SearxNG-speaking server in this process that records when every call arrived
and how many ran at once: what the limits let through is measured at the API, not believed from
the workers. The workers share the limits through the data dir's SQLite file.

Reported: completed / submitted (must be 1.0: a search over its limit degrades, it does not fail
the conversation), calls admitted in the busiest 60 s window (≤ the limit: 0 overshoot) and the
most at once (≤ 50), the share of searches answered from cache and degraded, p50/p99
conversation time, and model-call goodput (calls that counted in a job / requests the provider
got).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from storyloom import eventloop
from storyloom.bench.serve_process import ServeProcess

__all__ = ["ToolsBenchConfig", "run_tools_bench"]

_TOPICS = [
    "four-day work week", "nuclear power", "remote work", "rust for backends", "universal basic income",
    "electric cars", "microservices", "standing desks", "homework bans", "city car bans", "AI in schools",
    "open offices", "carbon taxes", "space tourism", "lab-grown meat", "crypto regulation", "tipping culture",
    "self-driving trucks", "daylight saving time", "college tuition", "minimum wage", "social media bans",
    "vertical farming", "nap pods at work", "plastic bag bans", "high-speed rail", "public libraries",
    "video game violence", "zoos", "tiny houses",
]  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolsBenchConfig:
    conversations: int = 500
    search_share: float = 0.30
    calls_per_minute: int = 100
    max_concurrency: int = 50
    workers: int = 3
    search_latency_s: float = 0.4
    model_latency_s: float = 5.0  # seed 003: 5-10 s per agent call
    answer_tokens: int = 60
    seed: int = 7
    ramp_s: float = 30.0  # submissions spread over this; with 5 s calls ~500 conversations are open at once
    timeout_s: float = 1500.0


@dataclass(slots=True)
class _SearchApi:
    latency_s: float
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def search(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
        finally:
            self.in_flight -= 1
        q = request.query.get("q", "")
        results = [
            {"title": f"{q}: source {i}", "url": f"https://search.example/{abs(hash((q, i))) % 10**8}",
             "content": f"What source {i} says about {q}."}
            for i in range(1, 4)
        ]  # fmt: skip
        return web.json_response({"query": q, "results": results})


def _max_in_window(times: list[float], window_s: float = 60.0) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)), default=0)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _inputs(cfg: ToolsBenchConfig) -> list[dict[str, Any]]:
    rng = random.Random(cfg.seed)
    searching = set(rng.sample(range(cfg.conversations), round(cfg.conversations * cfg.search_share)))
    out = []
    for i in range(cfg.conversations):
        topic = rng.choice(_TOPICS)
        out.append(
            {
                "message": f"Debate it: {topic}. Is it worth it?"
                if i in searching
                else f"Q{i}: your view on {topic}?",
                "session_id": f"bench-{i}",
                "search": "always" if i in searching else "never",
                "max_rounds": 2,
                "critics": 2,
            }
        )
    return out


async def _drive(cfg: ToolsBenchConfig, url: str, sim_root: str | None, api: _SearchApi) -> dict[str, Any]:
    inputs = _inputs(cfg)
    connector = aiohttp.TCPConnector(limit=100)
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        sim_before = await _sim_stats(http, sim_root)
        started = time.time()

        async def submit(body: dict[str, Any]) -> str | None:
            async with http.post(f"{url}/api/apps/debate/jobs", json={"input": body}) as r:
                return str((await r.json())["id"]) if r.status == 202 else None

        async def submit_at(i: int, body: dict[str, Any]) -> str | None:
            await asyncio.sleep(cfg.ramp_s * i / len(inputs))
            return await submit(body)

        ids = [i for i in await asyncio.gather(*(submit_at(n, b) for n, b in enumerate(inputs))) if i]
        deadline = time.monotonic() + cfg.timeout_s
        while time.monotonic() < deadline:
            params = [("kind", "debate"), ("status", "pending"), ("status", "running"), ("limit", "1")]
            async with http.get(f"{url}/api/jobs", params=params) as r:
                if (await r.json())["total"] == 0:
                    break
            await asyncio.sleep(2.0)
        wall = time.time() - started
        jobs: list[dict[str, Any]] = []
        for offset in range(0, len(ids) + 500, 500):
            params2 = [("kind", "debate"), ("limit", "500"), ("offset", str(offset))]
            async with http.get(f"{url}/api/jobs", params=params2) as r:
                page = (await r.json())["jobs"]
            jobs.extend(page)
            if len(page) < 500:
                break
        sim_after = await _sim_stats(http, sim_root)
    mine = [j for j in jobs if j["id"] in set(ids)]
    completed = [j for j in mine if j["status"] == "completed"]
    searches = [j["result"]["search"] for j in completed if j["result"]["search"]["queries"]]
    calls = sum(s["calls"] for s in searches)
    cached = sum(s["cached"] for s in searches)
    degraded = sum(s["degraded"] for s in searches)
    times = [j["finished_at"] - j["created_at"] for j in completed if j["finished_at"]]
    edges = sorted(
        [(j["created_at"], 1) for j in mine if j["finished_at"]]
        + [(j["finished_at"], -1) for j in mine if j["finished_at"]]
    )
    open_now = peak_open = 0
    for _, step in edges:
        open_now += step
        peak_open = max(peak_open, open_now)
    model_calls = sum(int(j["usage"]["calls"]) for j in completed)
    provider_requests = (sim_after.get("requests", 0) - sim_before.get("requests", 0)) if sim_after else 0
    admitted_max = _max_in_window(api.arrivals)
    statuses: dict[str, int] = {}
    for j in mine:
        statuses[j["status"]] = statuses.get(j["status"], 0) + 1
    return {
        "submitted": len(inputs),
        "statuses": statuses,
        "errors": sorted({str(j["error"])[:200] for j in mine if j.get("error")})[:5],
        "accepted": len(ids),
        "completed": len(completed),
        "completed_ratio": round(len(completed) / len(inputs), 4),
        "searching_conversations": len(searches),
        "tool_calls": calls,
        "search_demand_per_minute": round(calls / (cfg.ramp_s / 60.0), 1) if cfg.ramp_s else None,
        "tool_calls_admitted": len(api.arrivals),
        "tool_calls_admitted_max_per_60s": admitted_max,
        "tool_calls_per_minute_limit": cfg.calls_per_minute,
        "overshoot": max(0, admitted_max - cfg.calls_per_minute),
        "tool_max_concurrent_at_api": api.max_in_flight,
        "tool_concurrency_limit": cfg.max_concurrency,
        "cache_share": round(cached / calls, 4) if calls else 0.0,
        "degraded_share": round(degraded / calls, 4) if calls else 0.0,
        "degraded_conversations": sum(1 for j in completed if j["degraded"]),
        "max_conversations_at_once": peak_open,  # submitted and not yet finished
        "conversation_p50_s": round(_percentile(times, 0.5), 2),
        "conversation_p99_s": round(_percentile(times, 0.99), 2),
        "model_calls": model_calls,
        "provider_requests": provider_requests,
        "model_call_goodput": round(model_calls / provider_requests, 4) if provider_requests else None,
        "model_calls_per_s": round(model_calls / wall, 2) if wall else 0.0,
        "wall_s": round(wall, 1),
    }


async def _sim_stats(http: aiohttp.ClientSession, root: str | None) -> dict[str, Any]:
    if root is None:
        return {}
    try:
        async with http.get(f"{root}/stats") as r:
            return dict(await r.json()) if r.status == 200 else {}
    except aiohttp.ClientError:
        return {}


async def _run(cfg: ToolsBenchConfig, workdir: Path) -> dict[str, Any]:
    api = _SearchApi(cfg.search_latency_s)
    app = web.Application()
    app.router.add_get("/search", api.search)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sim = workdir / "sim.json"
    profile = {
        "ttft_s": 0.5,
        "latency_s": cfg.model_latency_s,
        "answer_tokens": cfg.answer_tokens,
        "jitter": 0.3,
    }
    sim.write_text(json.dumps({"seed": cfg.seed, "default": profile, "chunk_interval_s": 0.05}))
    policy = {
        "web_search": {"calls_per_minute": cfg.calls_per_minute, "max_concurrency": cfg.max_concurrency}
    }
    env = {
        "STORYLOOM_SEARCH_BACKEND": "searxng",
        "STORYLOOM_SEARCH_URL": f"http://127.0.0.1:{port}",
        "STORYLOOM_TOOL_POLICIES": json.dumps(policy),
    }
    per_worker = cfg.conversations // cfg.workers + 10
    args = [
        "--workers",
        f"{cfg.workers}..{cfg.workers}",
        "--sim-config",
        str(sim),
        "--concurrency",
        str(per_worker),
    ]
    args += ["--max-pending", str(cfg.conversations * 4)]
    loop = asyncio.get_running_loop()
    service = await loop.run_in_executor(None, lambda: ServeProcess(workdir, args, env=env))
    try:
        service.renice_simulator(5)
        await asyncio.sleep(3.0)  # the workers' start-up is not what is measured
        result = await _drive(cfg, service.url, service.simulator_root(), api)
        result["cpu_s"] = {k: round(v, 1) for k, v in service.cpu_seconds().items()}
    finally:
        await loop.run_in_executor(None, service.stop)
        await runner.cleanup()
    return result


def run_tools_bench(cfg: ToolsBenchConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-tools-") as tmp:
        result = eventloop.run(_run(cfg, Path(tmp)))
    result["config"] = {
        "conversations": cfg.conversations, "search_share": cfg.search_share, "searches_per_conversation": 3,
        "workers": cfg.workers, "ramp_s": cfg.ramp_s, "search_latency_s": cfg.search_latency_s,
        "model_latency_s": cfg.model_latency_s,
    }  # fmt: skip
    result["pass"] = (
        result["completed_ratio"] == 1.0
        and result["overshoot"] == 0
        and result["tool_max_concurrent_at_api"] <= cfg.max_concurrency
    )
    return result
