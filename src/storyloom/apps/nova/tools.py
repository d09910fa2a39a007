"""Nova's platform searches as tools: `xiaohongshu_search` and `douyin_search`.

Same input and answer shape as `web_search`, under seed 003's search policy (cache, limits,
breaker, degraded answer). There is no public API for either platform, so their backend is the
simulated one: the simulator's `/search` endpoint with `source` set to the platform when
`STORYLOOM_NOVA_SEARCH_URL` names one (faults and latency like the model simulator), else answers
generated in process. The URL is read when a call is made, since the app is declared at import.
"""

from __future__ import annotations

import os
from typing import Any

from storyloom.apps.nova.search import DOUYIN_SEARCH, XIAOHONGSHU_SEARCH
from storyloom.tools import SimSearchBackend, Tool, search_policy, search_tool

__all__ = ["SEARCH_URL_VARIABLE", "platform_tools"]

SEARCH_URL_VARIABLE = "STORYLOOM_NOVA_SEARCH_URL"


class _PlatformBackend:
    def __init__(self, source: str) -> None:
        self.source = source
        self.name = f"sim:{source}"

    async def search(self, query: str, max_results: int) -> list[dict[str, str]]:
        url = os.environ.get(SEARCH_URL_VARIABLE) or None
        return await SimSearchBackend(url, source=self.source).search(query, max_results)


def platform_tools() -> list[Tool[Any]]:
    return [
        search_tool(
            _PlatformBackend("xiaohongshu"),
            name=XIAOHONGSHU_SEARCH,
            description="Search Xiaohongshu (小红书) notes: titles, links and snippets of the top notes.",
            policy=search_policy(),
        ),
        search_tool(
            _PlatformBackend("douyin"),
            name=DOUYIN_SEARCH,
            description="Search Douyin (抖音) videos: titles, links and descriptions of the top videos.",
            policy=search_policy(),
        ),
    ]
