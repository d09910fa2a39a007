"""Nova's platform searches as tools: `xiaohongshu_search` and `douyin_search`.

Same input and answer shape as `web_search`, under seed 003's search policy (cache, limits,
breaker, degraded answer). There is no public API for either platform, so their backend is the
simulated search (`POST <url>/search` with `source` set to the platform: latency, quota and faults
like the model simulator) at the URL where they run: `STORYLOOM_SEARCH_URL` when the search
backend is `sim`, else the simulator's; answers generated in process when there is neither.
"""

from __future__ import annotations

from typing import Any

from storyloom.apps.nova.search import DOUYIN_SEARCH, XIAOHONGSHU_SEARCH
from storyloom.tools import SimSearchBackend, Tool, search_policy, search_tool
from storyloom.tools.steps import ToolSetup

__all__ = ["platform_tools", "platform_url"]


def platform_url(setup: ToolSetup) -> str | None:
    settings = setup.settings
    if settings is not None and settings.search_backend == "sim" and settings.search_url:
        return settings.search_url
    return setup.sim_url


def platform_tools(setup: ToolSetup) -> list[Tool[Any]]:
    url = platform_url(setup)
    return [
        search_tool(
            SimSearchBackend(url, source="xiaohongshu"),
            name=XIAOHONGSHU_SEARCH,
            description="Search Xiaohongshu (小红书) notes: titles, links and snippets of the top notes.",
            policy=search_policy(),
        ),
        search_tool(
            SimSearchBackend(url, source="douyin"),
            name=DOUYIN_SEARCH,
            description="Search Douyin (抖音) videos: titles, links and descriptions of the top videos.",
            policy=search_policy(),
        ),
    ]
