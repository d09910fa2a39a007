"""`web_search`: one tool, backends chosen by settings.

- `sim` (default): the simulator's `POST <sim>/v1/search` (latency, quota and faults like its
  models); with no simulator URL, answers generated in-process.
- `searxng`: SearxNG's JSON API, `GET <base>/search?q=...&format=json` →
  `{"results": [{"title", "url", "content"}]}`.
- `tavily`: `POST <base>/search` `{"query", "max_results"}` with `Authorization: Bearer <key>` →
  `{"results": [{"title", "url", "content", "score"}]}`.
- `brave`: `GET <base>/res/v1/web/search?q=...&count=N` with `X-Subscription-Token: <key>` →
  `{"web": {"results": [{"title", "url", "description"}]}}`.

Every backend answers the same shape, `{"query", "results": [{"title", "url", "snippet"}],
"backend"}`, so an app never knows which one it has. Other search-like tools (an app's platform
searches) reuse `search_tool(name, backend, ...)` with a `SimSearchBackend(source=...)`.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Protocol

from pydantic import BaseModel, Field

from storyloom.errors import ConfigError
from storyloom.tools import http
from storyloom.tools.base import Tool, ToolError, ToolPolicy

__all__ = [
    "BraveBackend",
    "SearchBackend",
    "SearchInput",
    "SearxngBackend",
    "SimSearchBackend",
    "TavilyBackend",
    "search_backend",
    "search_policy",
    "search_tool",
]


class SearchInput(BaseModel):
    query: str = Field(min_length=1, max_length=500, description="What to search the web for")
    max_results: int = Field(default=5, ge=1, le=20, description="How many results to return")


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]: ...


def _hit(title: Any, url: Any, snippet: Any) -> dict[str, str]:
    return {"title": str(title or ""), "url": str(url or ""), "snippet": str(snippet or "")}


def _json_or_error(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ToolError(f"{what} answered something that is not a JSON object")
    return doc


class SimSearchBackend:
    """The simulator's search endpoint; in-process generated answers when there is no simulator."""

    def __init__(self, base_url: str | None = None, *, source: str = "web", latency_s: float = 0.02) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.source = source
        self.latency_s = latency_s
        self.name = "sim"

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]:
        if self.base_url is None:
            await asyncio.sleep(self.latency_s)
            return simulated_results(query, max_results, self.source)
        body = {"query": query, "max_results": max_results, "source": self.source}
        async with http.session().post(f"{self.base_url}/search", json=body) as response:
            await http.raise_for_status(response, "the simulated search")
            doc = _json_or_error(await response.json(content_type=None), "the simulated search")
        return [_hit(r.get("title"), r.get("url"), r.get("snippet")) for r in doc.get("results") or ()]


def simulated_results(query: str, max_results: int, source: str = "web") -> list[dict[str, str]]:
    """Deterministic results for a query (the simulator's and the offline backend's)."""
    digest = hashlib.sha256(f"{source}\0{' '.join(query.split())}".encode()).hexdigest()
    out = []
    for i in range(max_results):
        tag = digest[i * 4 : i * 4 + 8] or digest[:8]
        out.append(
            _hit(
                f"{query} — {source} result {i + 1}",
                f"https://{source}.example/{tag}",
                f"About {query}: finding {tag} from {source} source {i + 1}.",
            )
        )
    return out


class SearxngBackend:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.name = "searxng"

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]:
        params = {"q": query, "format": "json"}
        async with http.session().get(f"{self.base_url}/search", params=params, headers=self.headers) as r:
            await http.raise_for_status(r, "SearxNG")
            doc = _json_or_error(await r.json(content_type=None), "SearxNG")
        results = doc.get("results") or []
        return [_hit(x.get("title"), x.get("url"), x.get("content")) for x in results[:max_results]]


class TavilyBackend:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        if not api_key:
            raise ConfigError("the tavily search backend needs STORYLOOM_SEARCH_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
        self.name = "tavily"

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]:
        body = {"query": query, "max_results": max_results, "search_depth": "basic"}
        async with http.session().post(f"{self.base_url}/search", json=body, headers=self.headers) as r:
            await http.raise_for_status(r, "Tavily")
            doc = _json_or_error(await r.json(content_type=None), "Tavily")
        return [_hit(x.get("title"), x.get("url"), x.get("content")) for x in (doc.get("results") or [])]


class BraveBackend:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        if not api_key:
            raise ConfigError("the brave search backend needs STORYLOOM_SEARCH_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.headers = {"x-subscription-token": api_key, "accept": "application/json"}
        self.name = "brave"

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]:
        params = {"q": query, "count": str(max_results)}
        url = f"{self.base_url}/res/v1/web/search"
        async with http.session().get(url, params=params, headers=self.headers) as r:
            await http.raise_for_status(r, "Brave search")
            doc = _json_or_error(await r.json(content_type=None), "Brave search")
        web = doc.get("web") or {}
        results = web.get("results") or [] if isinstance(web, dict) else []
        return [_hit(x.get("title"), x.get("url"), x.get("description")) for x in results[:max_results]]


_DEFAULT_URLS = {"tavily": "https://api.tavily.com", "brave": "https://api.search.brave.com"}


def search_backend(
    kind: str, *, base_url: str | None = None, api_key: str | None = None, sim_url: str | None = None
) -> SearchBackend:
    """The backend named by settings (`STORYLOOM_SEARCH_BACKEND`, `_URL`, `_API_KEY`)."""
    if kind == "sim":
        return SimSearchBackend(base_url or sim_url)
    if kind == "searxng":
        if not base_url:
            raise ConfigError(
                "the searxng search backend needs STORYLOOM_SEARCH_URL (e.g. http://127.0.0.1:8888)"
            )
        return SearxngBackend(base_url, api_key)
    if kind == "tavily":
        return TavilyBackend(base_url or _DEFAULT_URLS["tavily"], api_key)
    if kind == "brave":
        return BraveBackend(base_url or _DEFAULT_URLS["brave"], api_key)
    raise ConfigError(f"unknown search backend {kind!r}: use sim, searxng, tavily or brave")


def _degraded_search(args: BaseModel, reason: str) -> dict[str, Any]:
    query = getattr(args, "query", "")
    return {
        "query": query,
        "results": [],
        "backend": None,
        "degraded": True,
        "message": "web search is unavailable right now; answer from what you know and say so",
        "reason": reason,
    }


def search_policy(**overrides: Any) -> ToolPolicy:
    """Seed 003's search policy: 600 s cache, 100 calls/min, 50 at once, 10 s timeout, one retry."""
    base: dict[str, Any] = {
        "max_concurrency": 50,
        "calls_per_minute": 100,
        "timeout_s": 10.0,
        "retries": 1,
        "cache_ttl_s": 600.0,
        "max_wait_s": 5.0,
        "degraded": _degraded_search,
    }
    base.update(overrides)
    return ToolPolicy(**base)


def search_tool(
    backend: SearchBackend,
    *,
    name: str = "web_search",
    description: str = "Search the web; returns titles, URLs and snippets of the top results.",
    policy: ToolPolicy | None = None,
) -> Tool[SearchInput]:
    async def run(args: SearchInput) -> dict[str, Any]:
        results = await backend.search(args.query, args.max_results)
        return {"query": args.query, "results": results, "backend": backend.name}

    return Tool(
        name=name, input=SearchInput, fn=run, description=description, policy=policy or search_policy()
    )
