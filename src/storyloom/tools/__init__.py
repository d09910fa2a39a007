"""Tools: external capabilities with their own limits, cache, breaker and degraded answers.

A step calls `await ctx.tool("web_search", query=...)` (several at once: `await ctx.tools([...])`)
and gets a `ToolResult`; a model calls them through function calling (`storyloom.agents.run_tools`).
Every call runs under its tool's `ToolPolicy` in the process's `ToolRuntime`; the limits are shared
by every process through the LLM gateway's limit backends (memory, SQLite file, Redis).
"""

from storyloom.tools.base import (
    DegradedFactory,
    Tool,
    ToolArgumentsError,
    ToolCallMeta,
    ToolError,
    ToolNotFoundError,
    ToolPolicy,
    ToolResult,
    tool_breaker,
)
from storyloom.tools.cache import ToolCache, normalized_key
from storyloom.tools.fetch import FetchInput, fetch_tool
from storyloom.tools.registry import ToolRegistry, tool
from storyloom.tools.runtime import ToolRuntime, limit_name
from storyloom.tools.search import (
    BraveBackend,
    SearchBackend,
    SearchInput,
    SearxngBackend,
    SimSearchBackend,
    TavilyBackend,
    search_backend,
    search_policy,
    search_tool,
)
from storyloom.tools.setup import build_registry, build_runtime, builtin_tools, tools_limits_url

__all__ = [
    "BraveBackend",
    "DegradedFactory",
    "FetchInput",
    "SearchBackend",
    "SearchInput",
    "SearxngBackend",
    "SimSearchBackend",
    "TavilyBackend",
    "Tool",
    "ToolArgumentsError",
    "ToolCache",
    "ToolCallMeta",
    "ToolError",
    "ToolNotFoundError",
    "ToolPolicy",
    "ToolRegistry",
    "ToolResult",
    "ToolRuntime",
    "build_registry",
    "build_runtime",
    "builtin_tools",
    "fetch_tool",
    "limit_name",
    "normalized_key",
    "search_backend",
    "search_policy",
    "search_tool",
    "tool",
    "tool_breaker",
    "tools_limits_url",
]
