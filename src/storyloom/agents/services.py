"""`RunServices`: what a run hands its steps (`flow.StepServices`): model calls and tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from storyloom.agents.handle import LLMHandle, RunLLM
from storyloom.errors import FlowError
from storyloom.flow.context import StepContext
from storyloom.tools.base import ToolResult

__all__ = ["RunServices", "ToolCaller"]

ToolCaller = Callable[[StepContext[Any], str, dict[str, Any]], Awaitable[ToolResult]]
"""Runs one tool call for a step (the tool registry, with its limits, cache and breaker)."""


class RunServices:
    """One per run: `llm` shared by its steps (each gets its own `LLMHandle`), and tools if any."""

    __slots__ = ("_tools", "shared")

    def __init__(self, shared: RunLLM | None, tools: ToolCaller | None = None) -> None:
        self.shared = shared
        self._tools = tools

    def llm(self, ctx: StepContext[Any]) -> LLMHandle:
        if self.shared is None:
            raise FlowError(f"step {ctx.path!r} asked for a model, but this run has no model client")
        return LLMHandle(self.shared, ctx)

    async def tool(self, ctx: StepContext[Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        if self._tools is None:
            raise FlowError(f"step {ctx.path!r} called tool {name!r}, but this run has no tools")
        return await self._tools(ctx, name, arguments)
