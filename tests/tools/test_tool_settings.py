"""Tools from settings: the built-ins, the search backend, policy overrides and mistakes said once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from storyloom.config import Settings
from storyloom.errors import ConfigError
from storyloom.tools import Tool, ToolPolicy, build_registry, tools_limits_url


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None, **kw)  # type: ignore[call-arg, arg-type]


class W(BaseModel):
    w: str


async def _noop(args: W) -> dict[str, str]:
    return {}


def test_builtins_policies_and_overrides(tmp_path: Path) -> None:
    registry = build_registry(_settings(tmp_path))
    assert registry.names == ["fetch_page", "web_search"]
    search = registry.get("web_search").policy
    assert (search.max_concurrency, search.calls_per_minute, search.cache_ttl_s) == (50, 100, 600.0)
    overridden = build_registry(
        _settings(
            tmp_path,
            tool_policies={"web_search": {"calls_per_minute": 30, "breaker": {"minimum_calls": 9}}},
            search_backend="searxng",
            search_url="http://127.0.0.1:8888",
        )
    ).get("web_search")
    assert overridden.policy.calls_per_minute == 30 and overridden.policy.breaker.minimum_calls == 9
    assert overridden.policy.breaker.half_open_calls == 1  # the rest of the breaker is kept
    assert overridden.policy.degraded is search.degraded


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"tool_policies": {"nope": {}}}, "unknown tool 'nope'"),
        ({"tool_policies": {"web_search": {"rpm": 1}}}, "unknown tool policy field"),
        (
            {"tool_policies": {"web_search": {"calls_per_minute": 0}}},
            "calls_per_minute must be an integer >= 1",
        ),
        ({"search_backend": "searxng"}, "needs STORYLOOM_SEARCH_URL"),
        ({"search_backend": "tavily"}, "needs STORYLOOM_SEARCH_API_KEY"),
    ],
)
def test_a_wrong_setting_is_one_sentence(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_registry(_settings(tmp_path, **kw))


def test_an_apps_tool_may_not_take_a_used_name(tmp_path: Path) -> None:
    clash = Tool(name="web_search", input=W, fn=_noop)
    with pytest.raises(ConfigError, match="two different tools are named 'web_search'"):
        build_registry(_settings(tmp_path), app_tools=[clash])
    with pytest.raises(ConfigError, match=r"tool name 'a\.b'"):
        Tool(name="a.b", input=W, fn=_noop)
    with pytest.raises(ConfigError, match="burst"):
        ToolPolicy(burst=0)


def test_limits_are_shared_where_the_gateways_are(tmp_path: Path) -> None:
    assert tools_limits_url(_settings(tmp_path)) == f"sqlite:///{(tmp_path / 'llm-limits.db').resolve()}"
    assert tools_limits_url(_settings(tmp_path, redis_url="redis://r:6379/0")) == "redis://r:6379/0"
    assert tools_limits_url(_settings(tmp_path, limits_url="memory://")) == "memory://"
    assert tools_limits_url(
        _settings(tmp_path, tools_limits_url="sqlite:///x.db", limits_url="memory://")
    ) == ("sqlite:///x.db")
