"""The Nova app (seed 001): a supervisor, four content sub-agents in parallel with web and
platform searches, and a writer that streams a Xiaohongshu-style post (title, body, tags)."""

from __future__ import annotations

from typing import Any

from storyloom.app import App
from storyloom.apps.nova.models import NovaInput, NovaResult

__all__ = ["NovaInput", "NovaResult", "app"]


def _flow() -> Any:
    from storyloom.apps.nova.flow import nova_flow

    return nova_flow


def _result(run: Any) -> NovaResult:
    from storyloom.apps.nova.flow import nova_result

    return nova_result(run)


def _tools() -> list[Any]:
    from storyloom.apps.nova.tools import platform_tools

    return platform_tools()


app: App[NovaInput] = App(
    name="nova",
    title="Nova post",
    description="A supervisor picks content sub-agents (profile, insight, facts, hitpoint) that search in "
    "parallel; a writer streams a Xiaohongshu-style post.",
    input=NovaInput,
    flow=_flow(),
    result=_result,
    answer_step="write",
    tools=_tools(),
)
