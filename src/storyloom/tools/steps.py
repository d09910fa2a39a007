"""How steps reach the tools: a `ToolCaller` over a runtime, and the tools an app declares.

`step_tool_caller` is what the job runner gives a run (with the job's identity and a usage
recorder); a test or a script that runs a flow directly passes one to `RunServices` the same way.
Each call emits a `tool` event of its step, so the stream shows every call and how it went.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storyloom.tools.base import Tool, ToolCallMeta, ToolResult
from storyloom.tools.runtime import ToolRuntime

if TYPE_CHECKING:
    from storyloom.config import Settings
    from storyloom.flow.context import StepContext

__all__ = ["ToolSetup", "app_tools", "step_tool_caller"]


@dataclass(frozen=True, slots=True)
class ToolSetup:
    """What an app's `tools=` factory gets, for tools that depend on where they run (the
    simulator's URL for simulated backends, the settings for real ones)."""

    settings: Settings | None = None
    sim_url: str | None = None


def app_tools(apps: Sequence[Any], setup: ToolSetup) -> list[Tool[Any]]:
    """Every app's tools: `App.tools` is a list, or a factory `(ToolSetup) -> list`."""
    out: list[Tool[Any]] = []
    for app in apps:
        declared = app.tools
        out.extend(declared(setup) if callable(declared) else declared)
    return out


def step_tool_caller(
    runtime: ToolRuntime,
    *,
    tenant: str = "default",
    priority: int = 5,
    job_id: str | None = None,
    on_call: Callable[[StepContext[Any], str, ToolResult], None] | None = None,
) -> Callable[[StepContext[Any], str, dict[str, Any]], Awaitable[ToolResult]]:
    """A `ToolCaller` for steps: runs the call with this identity, emits its `tool` event
    (tool, arguments, outcome, degraded, cached, reason, attempts, elapsed_s), then `on_call`."""

    async def call(ctx: StepContext[Any], name: str, arguments: dict[str, Any]) -> ToolResult:
        meta = ToolCallMeta(tenant=tenant, priority=priority, job_id=job_id, step=ctx.path)
        result = await runtime.call(name, arguments, meta)
        ctx.emit(
            "tool",
            tool=name,
            arguments=arguments,
            outcome=result.outcome,
            degraded=result.degraded,
            cached=result.cached,
            reason=result.reason,
            attempts=result.attempts,
            elapsed_s=round(result.elapsed_s, 4),
        )
        if on_call is not None:
            on_call(ctx, name, result)
        return result

    return call
