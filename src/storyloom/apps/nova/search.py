"""The sub-agents' searches: web search plus the platforms' own (seed 001: Jina, XHS, DY search).

Each platform search is a tool like `web_search` (same input, same answer shape, its own limits,
cache and breaker). An agent's searches run in parallel; a degraded one is counted, not raised.
"""

from __future__ import annotations

import asyncio
from typing import Any

from storyloom.apps.nova.models import SearchUse
from storyloom.flow import StepContext

__all__ = ["AGENT_TOOLS", "DOUYIN_SEARCH", "XIAOHONGSHU_SEARCH", "agent_search"]

XIAOHONGSHU_SEARCH = "xiaohongshu_search"
DOUYIN_SEARCH = "douyin_search"

AGENT_TOOLS: dict[str, tuple[str, ...]] = {
    "profile": (XIAOHONGSHU_SEARCH,),  # who reads such posts, in their own words
    "insight": (XIAOHONGSHU_SEARCH, DOUYIN_SEARCH),  # what the audience feels and argues about
    "facts": ("web_search",),  # what is true
    "hitpoint": (DOUYIN_SEARCH,),  # what is trending, what hooks
}


async def agent_search(ctx: StepContext[Any], agent: str, query: str) -> SearchUse:
    tools = AGENT_TOOLS[agent]
    use = SearchUse()
    results = await asyncio.gather(*(ctx.tool(tool, query=query, max_results=3) for tool in tools))
    for tool, result in zip(tools, results, strict=True):
        use.calls += 1
        use.cached += int(bool(getattr(result, "cached", False)))
        if bool(getattr(result, "degraded", False)):
            use.degraded += 1
            use.reasons.append(f"{tool}: {getattr(result, 'reason', '') or 'degraded'}")
            continue
        output = getattr(result, "output", result)
        for hit in (output.get("results") or [])[:3] if isinstance(output, dict) else []:
            if isinstance(hit, dict):
                line = " — ".join(str(hit.get(k) or "").strip() for k in ("title", "snippet") if hit.get(k))
                if line:
                    use.findings.append(f"[{tool}] {line}")
    if use.degraded:
        ctx.emit("step.degraded", reason=f"{use.degraded} of {use.calls} searches degraded: {use.reasons[0]}")
    return use
