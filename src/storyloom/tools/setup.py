"""Building a process's tools from settings: the built-ins, every app's own, and their runtime.

The only place that reads tool settings (`STORYLOOM_SEARCH_*`, `STORYLOOM_FETCH_ALLOW_PRIVATE`,
`STORYLOOM_TOOL_POLICIES`, `STORYLOOM_TOOLS_LIMITS_URL`); MCP servers are connected by
`tools.mcp.register_mcp_servers` (async, since it opens sessions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from storyloom.errors import ConfigError
from storyloom.tools.base import Tool
from storyloom.tools.fetch import fetch_tool
from storyloom.tools.registry import ToolRegistry
from storyloom.tools.runtime import ToolRuntime
from storyloom.tools.search import search_backend, search_tool

if TYPE_CHECKING:
    from storyloom.config import Settings

__all__ = [
    "apply_policy_overrides",
    "build_registry",
    "build_runtime",
    "build_tool_runtime",
    "builtin_tools",
    "tools_limits_url",
]


def builtin_tools(settings: Settings | None = None, *, sim_url: str | None = None) -> list[Tool[Any]]:
    """`web_search` (backend by settings; the simulator's by default) and `fetch_page`."""
    kind = settings.search_backend if settings is not None else "sim"
    backend = search_backend(
        kind,
        base_url=settings.search_url if settings is not None else None,
        api_key=settings.search_api_key if settings is not None else None,
        sim_url=sim_url,
    )
    allow_private = settings.fetch_allow_private if settings is not None else False
    return [search_tool(backend), fetch_tool(allow_private=allow_private)]


def apply_policy_overrides(registry: ToolRegistry, overrides: dict[str, dict[str, Any]]) -> None:
    import dataclasses

    for name, fields in overrides.items():
        if name not in registry:
            raise ConfigError(
                f"STORYLOOM_TOOL_POLICIES names an unknown tool {name!r} (known: {registry.names})"
            )
        old = registry.get(name)
        try:
            policy = old.policy.with_overrides(fields)
        except TypeError as exc:
            raise ConfigError(f"STORYLOOM_TOOL_POLICIES[{name!r}]: {exc}") from exc
        registry.add(dataclasses.replace(old, policy=policy), replace=True)


def build_registry(
    settings: Settings | None = None,
    *,
    app_tools: Iterable[Tool[Any]] = (),
    sim_url: str | None = None,
) -> ToolRegistry:
    """Built-ins + the apps' tools (a name used twice is a ConfigError), then policy overrides."""
    registry = ToolRegistry(builtin_tools(settings, sim_url=sim_url))
    registry.extend(app_tools)
    if settings is not None and settings.tool_policies:
        apply_policy_overrides(registry, settings.tool_policies)
    return registry


def tools_limits_url(settings: Settings) -> str:
    """Where tools' limits are shared: STORYLOOM_TOOLS_LIMITS_URL, else STORYLOOM_LIMITS_URL, else
    Redis, else a SQLite file of the data dir (every worker process of this machine)."""
    if settings.tools_limits_url:
        return settings.tools_limits_url
    if settings.limits_url:
        return settings.limits_url
    if settings.redis_url:
        return settings.redis_url
    return f"sqlite:///{(settings.data_dir / 'llm-limits.db').resolve()}"


def build_runtime(settings: Settings, registry: ToolRegistry) -> ToolRuntime:
    """The runtime over `registry`; MCP servers of STORYLOOM_MCP_SERVERS connect on the first call."""
    prepare = None
    if settings.mcp_servers:
        from storyloom.tools.mcp import load_mcp_servers, register_mcp_servers

        servers = load_mcp_servers(settings.mcp_servers)  # a bad document fails here, at start

        async def prepare(reg: ToolRegistry) -> None:
            await register_mcp_servers(reg, servers)

    return ToolRuntime(
        registry,
        limits_url=tools_limits_url(settings),
        tenant_weights=dict(settings.tenant_weights),
        prepare=prepare,
    )


def build_tool_runtime(
    settings: Settings, app_tools: Iterable[Tool[Any]] = (), *, sim_url: str | None = None
) -> ToolRuntime:
    """What a worker process uses: built-ins + the apps' tools (+ MCP servers'), shared limits."""
    return build_runtime(settings, build_registry(settings, app_tools=app_tools, sim_url=sim_url))
