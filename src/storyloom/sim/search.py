"""The simulator's web search: `POST /v1/search`, with latency, a quota and faults like its models.

Request `{"query": str, "max_results": 1..20 (5), "source": str ("web")}` → `{"query", "source",
"results": [{"title", "url", "snippet"}]}` (deterministic: `tools.search.simulated_results`).
`SimConfig.search` sets `latency_s` (± `jitter`), `quota` (rpm / concurrency, enforce or count
over `window_s`), and `faults` (`error_5xx`, `error_429`, `hang`); `/stats` reports `search`:
requests, admitted, completed, rejected_429, faults, in_flight, max_concurrency,
max_window_requests (the most admitted in any window: what a limit must keep under its quota).

A raw ASGI endpoint so that a hang notices the client leaving (a tool's timeout) and frees its
concurrency slot, as the chat endpoint does.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from storyloom.sim.config import SearchFaults, SearchProfile
from storyloom.sim.quota import QuotaWindow
from storyloom.sim.wire import error_body

__all__ = ["SearchEndpoint", "SearchFaults", "SearchProfile", "SearchState"]


@dataclass(slots=True)
class SearchState:
    window: QuotaWindow = field(default_factory=QuotaWindow)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    counts: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("error_5xx", "error_429", "hang"), 0)
    )
    rejected: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("rpm", "concurrency", "injected"), 0)
    )

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def snapshot(self, now: float, profile: SearchProfile) -> dict[str, Any]:
        w = self.window
        current, _ = w.current(now, profile.window_s)
        return {
            "requests": self.counts.get("requests", 0),
            "admitted": self.counts.get("admitted", 0),
            "completed": self.counts.get("completed", 0),
            "bad_requests": self.counts.get("bad_requests", 0),
            "client_disconnects": self.counts.get("client_disconnects", 0),
            "rejected_429": dict(self.rejected),
            "faults": dict(self.faults),
            "in_flight": w.in_flight,
            "max_concurrency": w.max_in_flight,
            "current_window_requests": current,
            "max_window_requests": w.max_window_requests,
            "over_quota_admitted": w.over_quota_admitted,
        }


def _parse(raw: bytes) -> dict[str, Any] | str:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "The request body is not valid JSON."
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        return "'query' is required and must be a non-empty string."
    n = body.get("max_results", 5)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 20:
        return "'max_results' must be an integer from 1 to 20."
    source = body.get("source", "web")
    if not isinstance(source, str) or not source:
        return "'source' must be a non-empty string."
    return {"query": query, "max_results": n, "source": source}


async def _send(send: Any, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class SearchEndpoint:
    """POST /v1/search as a raw ASGI app over the simulator's live state (`state.config.search`)."""

    def __init__(self, state: Any) -> None:
        self.state = state  # a SimState: its `config.search` and `search`

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from storyloom.tools.search import simulated_results

        st: SearchState = self.state.search
        profile: SearchProfile = self.state.config.search
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        st.count("requests")
        parsed = _parse(b"".join(chunks))
        if isinstance(parsed, str):
            st.count("bad_requests")
            await _send(send, 400, error_body(400, parsed))
            return
        u = st.rng.random()
        f = profile.faults
        retry = {"retry-after": str(max(1, math.ceil(profile.retry_after_s)))}
        if u < f.error_5xx:
            st.faults["error_5xx"] += 1
            await _send(send, 503, error_body(503, "The search backend had an error (simulated)."))
            return
        if u < f.error_5xx + f.error_429:
            st.faults["error_429"] += 1
            st.rejected["injected"] += 1
            await _send(send, 429, error_body(429, "Search rate limit reached (simulated)."), retry)
            return
        now = loop.time()
        admission = st.window.admit(profile.quota, profile.window_s, now, 0)
        if not admission.admitted:
            st.rejected[admission.cause or "rpm"] += 1
            headers = {"retry-after": str(max(1, math.ceil(admission.retry_after_s)))}
            await _send(send, 429, error_body(429, admission.message), headers)
            return
        st.count("admitted")
        ticket = admission.ticket
        assert ticket is not None
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = loop.create_task(watch())
        try:
            hang = u < f.error_5xx + f.error_429 + f.hang
            if hang:
                st.faults["hang"] += 1
            delay = (
                profile.hang_s
                if hang
                else profile.latency_s * (1 + profile.jitter * (2 * st.rng.random() - 1))
            )
            try:
                async with asyncio.timeout(delay):
                    await gone.wait()
                st.count("client_disconnects")
                return
            except TimeoutError:
                pass
            if hang:
                await _send(send, 504, error_body(504, "The simulated search hang ended."))
                return
            results = simulated_results(parsed["query"], parsed["max_results"], parsed["source"])
            body = {"query": parsed["query"], "source": parsed["source"], "results": results}
            await _send(send, 200, json.dumps(body, ensure_ascii=False).encode())
            st.count("completed")
        finally:
            watcher.cancel()
            st.window.release(ticket)
