"""The Planner's web searches: the one place the debate calls a tool.

Searches run in parallel, each under the `web_search` tool's own limits, cache and breaker; a
search that cannot be answered comes back degraded (not an error), and the report says how many
did, so the answer and the job are honest about what they stand on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from storyloom.apps.debate.models import SearchReport
from storyloom.flow import StepContext

__all__ = ["SEARCH_TOOL", "findings_of", "run_searches"]

SEARCH_TOOL = "web_search"
_MAX_FINDINGS_PER_QUERY = 3


async def run_searches(
    ctx: StepContext[Any], queries: Sequence[str], *, tool: str = SEARCH_TOOL
) -> SearchReport:
    report = SearchReport(queries=list(queries))
    if not queries:
        return report
    results = await asyncio.gather(*(ctx.tool(tool, query=q) for q in queries))
    for query, result in zip(queries, results, strict=True):
        report.calls += 1
        if bool(getattr(result, "cached", False)):
            report.cached += 1
        if bool(getattr(result, "degraded", False)):
            report.degraded += 1
            report.reasons.append(f"{query}: {getattr(result, 'reason', '') or 'degraded'}")
        report.findings.extend(findings_of(getattr(result, "output", result))[:_MAX_FINDINGS_PER_QUERY])
    if report.degraded:
        ctx.emit("step.degraded", reason=f"{report.degraded} of {report.calls} searches degraded")
    return report


def findings_of(output: Any) -> list[str]:
    """Lines of evidence from a search answer: {"results": [{"title", "snippet"|"content", "url"}]}
    as the built-in backends answer; a degraded answer has none."""
    if not isinstance(output, Mapping) or output.get("degraded"):
        return []
    found: list[str] = []
    for item in output.get("results") or []:
        if not isinstance(item, Mapping):
            continue
        title = str(item.get("title") or "").strip()
        body = str(item.get("snippet") or item.get("content") or "").strip()
        url = str(item.get("url") or "").strip()
        line = " — ".join(p for p in (title, body) if p)
        if line:
            found.append(f"{line} ({url})" if url else line)
    return found
