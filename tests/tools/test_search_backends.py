"""web_search over real loopback HTTP: each backend against a local server speaking its API's wire
format, the simulator's search with its faults (5xx, hang, 429 → degraded), and fetch_page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from storyloom.tools import (
    SimSearchBackend,
    ToolRegistry,
    ToolRuntime,
    fetch_tool,
    search_backend,
    search_policy,
    search_tool,
    tool_breaker,
)


@dataclass
class Fake:
    """A local API server; `mode` is ok, fail (503), hang or limited (429 with Retry-After)."""

    url: str = ""
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)


def _results(q: str) -> list[dict[str, Any]]:
    return [{"title": f"{q} {i}", "url": f"https://ex.org/{i}", "text": f"about {q} {i}"} for i in range(8)]


async def _misbehave(fake: Fake) -> web.Response | None:
    if fake.mode == "fail":
        return web.json_response({"error": "upstream"}, status=503)
    if fake.mode == "limited":
        return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
    if fake.mode == "hang":
        await asyncio.sleep(30)
    return None


def _searxng(fake: Fake) -> web.Application:
    async def search(request: web.Request) -> web.Response:
        fake.requests.append({"query": dict(request.query), "headers": dict(request.headers)})
        if (bad := await _misbehave(fake)) is not None:
            return bad
        if request.query.get("format") != "json":
            return web.Response(status=403, text="format not allowed")  # SearxNG's answer
        q = request.query["q"]
        return web.json_response(
            {
                "query": q,
                "number_of_results": 0,
                "results": [
                    {"url": r["url"], "title": r["title"], "content": r["text"], "engine": "duckduckgo",
                     "parsed_url": ["https", "ex.org", "/", "", "", ""], "engines": ["duckduckgo"],
                     "positions": [1], "score": 1.0, "category": "general"}
                    for r in _results(q)
                ],
                "answers": [], "corrections": [], "infoboxes": [], "suggestions": [],
                "unresponsive_engines": [],
            }
        )  # fmt: skip

    app = web.Application()
    app.router.add_get("/search", search)
    return app


def _tavily(fake: Fake) -> web.Application:
    async def search(request: web.Request) -> web.Response:
        body = await request.json()
        fake.requests.append({"body": body, "headers": dict(request.headers)})
        if request.headers.get("Authorization") != "Bearer tvly-test":
            return web.json_response(
                {"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401
            )
        if (bad := await _misbehave(fake)) is not None:
            return bad
        q = body["query"]
        return web.json_response(
            {
                "query": q, "follow_up_questions": None, "answer": None, "images": [],
                "results": [
                    {"title": r["title"], "url": r["url"], "content": r["text"], "score": 0.9,
                     "raw_content": None}
                    for r in _results(q)[: body.get("max_results", 5)]
                ],
                "response_time": 0.42,
            }
        )  # fmt: skip

    app = web.Application()
    app.router.add_post("/search", search)
    return app


def _brave(fake: Fake) -> web.Application:
    async def search(request: web.Request) -> web.Response:
        fake.requests.append({"query": dict(request.query), "headers": dict(request.headers)})
        if request.headers.get("X-Subscription-Token") != "brave-test":
            return web.json_response({"type": "ErrorResponse", "error": {"status": 422}}, status=422)
        if (bad := await _misbehave(fake)) is not None:
            return bad
        q = request.query["q"]
        count = int(request.query.get("count", "20"))
        return web.json_response(
            {
                "query": {"original": q}, "mixed": {"type": "mixed"}, "type": "search",
                "web": {"type": "search", "family_friendly": True, "results": [
                    {"title": r["title"], "url": r["url"], "description": r["text"], "type": "search_result",
                     "language": "en"}
                    for r in _results(q)[:count]
                ]},
            }
        )  # fmt: skip

    app = web.Application()
    app.router.add_get("/res/v1/web/search", search)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(make: Any) -> Fake:
        fake = Fake()
        runner = web.AppRunner(make(fake), shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        fake.url = f"http://127.0.0.1:{port}"
        runners.append(runner)
        return fake

    yield start
    for runner in runners:
        await runner.cleanup()


def _runtime(backend: Any, **policy: Any) -> ToolRuntime:
    # A breaker that does not trip here: each fault must reach the API (test_tool_runtime covers it).
    merged: dict[str, Any] = {
        "timeout_s": 0.5,
        "backoff_s": 0.01,
        "retries": 1,
        "cache_ttl_s": 600.0,
        "breaker": tool_breaker(minimum_calls=1000),
    }
    merged.update(policy)
    return ToolRuntime(ToolRegistry([search_tool(backend, policy=search_policy(**merged))]))


@pytest.mark.parametrize(
    ("kind", "make", "key"),
    [("searxng", _searxng, None), ("tavily", _tavily, "tvly-test"), ("brave", _brave, "brave-test")],
)
async def test_each_backend_speaks_its_api_and_degrades_when_it_fails(
    serve: Any, kind: str, make: Any, key: str | None
) -> None:
    fake: Fake = await serve(make)
    rt = _runtime(search_backend(kind, base_url=fake.url, api_key=key))
    try:
        ok = await rt.call("web_search", {"query": "green tea", "max_results": 3})
        assert not ok.degraded and ok.output["backend"] == kind
        assert ok.output["results"][0] == {
            "title": "green tea 0",
            "url": "https://ex.org/0",
            "snippet": "about green tea 0",
        }
        assert len(ok.output["results"]) == 3
        assert (await rt.call("web_search", {"query": "green  tea ", "max_results": 3})).cached
        sent = len(fake.requests)
        for mode, reason in (("fail", "failed"), ("hang", "timeout"), ("limited", "rate_limited")):
            fake.mode = mode
            bad = await rt.call("web_search", {"query": f"{mode} query"})
            assert bad.degraded and bad.reason is not None and bad.reason.startswith(reason), bad.reason
            assert bad.output["results"] == [] and bad.output["degraded"] is True
        assert len(fake.requests) > sent  # the failures were real calls
    finally:
        await rt.aclose()


async def test_a_refused_key_degrades_without_retrying(serve: Any) -> None:
    fake: Fake = await serve(_tavily)
    rt = _runtime(search_backend("tavily", base_url=fake.url, api_key="wrong"))
    try:
        result = await rt.call("web_search", {"query": "x"})
    finally:
        await rt.aclose()
    assert result.degraded and result.reason == "failed: Tavily refused the API key (HTTP 401)"
    assert len(fake.requests) == 1


async def test_the_simulated_search_has_latency_quota_and_faults(sim: Any) -> None:
    sim.configure(search={"latency_s": 0.01, "faults": {"error_5xx": 0, "error_429": 0, "hang": 0}})
    rt = _runtime(SimSearchBackend(sim.url), timeout_s=0.3, retries=0, max_wait_s=0.2)
    quota = _runtime(SimSearchBackend(sim.url), timeout_s=0.3, retries=0, max_wait_s=0.2)
    try:
        ok = await rt.call("web_search", {"query": "pu-erh"})
        assert not ok.degraded and ok.output["backend"] == "sim" and len(ok.output["results"]) == 5
        for fault, reason in (("error_5xx", "failed"), ("hang", "timeout"), ("error_429", "rate_limited")):
            sim.configure(search={"faults": {"error_5xx": 0, "error_429": 0, "hang": 0, fault: 1.0}})
            bad = await rt.call("web_search", {"query": f"q {fault}"})
            assert bad.degraded and bad.reason is not None and bad.reason.startswith(reason), bad.reason
        stats = sim.stats()["search"]
        assert stats["faults"] == {"error_5xx": 1, "error_429": 1, "hang": 1}
        sim.reset_stats()  # a fresh quota window
        sim.configure(search={"faults": {"error_429": 0}, "quota": {"rpm": 1}})
        assert not (await quota.call("web_search", {"query": "fills the quota"})).degraded
        over = await quota.call("web_search", {"query": "over the quota"})
        assert over.degraded and over.reason is not None and over.reason.startswith("rate_limited")
        # The 429's Retry-After pauses the tool for every caller: the next one does not even ask.
        paused = await quota.call("web_search", {"query": "after the 429"})
        assert paused.degraded and paused.reason == "limit_wait"
        assert sim.stats()["search"]["requests"] == 2
    finally:
        sim.configure(search={"quota": {"rpm": None}})
        await rt.aclose()
        await quota.aclose()


async def test_fetch_page_extracts_text_within_its_limits(serve: Any) -> None:
    html = (
        "<html><head><title>Tea  notes</title><style>p{}</style></head><body><script>x=1</script>"
        "<h1>Green tea</h1><p>Steep at <b>80</b> °C.</p><p>" + "long " * 400 + "</p></body></html>"
    )

    def make(fake: Fake) -> web.Application:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        async def image(request: web.Request) -> web.Response:
            return web.Response(body=b"\x89PNG", content_type="image/png")

        app = web.Application()
        app.router.add_get("/tea", page)
        app.router.add_get("/img", image)
        return app

    fake: Fake = await serve(make)
    rt = ToolRuntime(ToolRegistry([fetch_tool(max_bytes=600, allow_private=True)]))
    try:
        page = await rt.call("fetch_page", {"url": f"{fake.url}/tea", "max_chars": 200})
        image = await rt.call("fetch_page", {"url": f"{fake.url}/img"})
        missing = await rt.call("fetch_page", {"url": f"{fake.url}/nope"})
    finally:
        await rt.aclose()
    out = page.output
    assert not page.degraded and out["title"] == "Tea notes" and out["truncated"] is True
    assert out["text"].startswith("Green tea\nSteep at 80 °C.") and "x=1" not in out["text"]
    assert len(out["text"]) <= 200
    assert image.degraded and image.reason is not None and "image/png" in image.reason
    assert missing.degraded and missing.reason is not None and "HTTP 404" in missing.reason
