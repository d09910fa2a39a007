"""The function-calling loop: model → its tool calls, run in parallel → model, at most N rounds.

Each round sends the conversation with the offered tools; an answer without tool calls ends the
loop. Every call goes through the step's `ctx.tool` (limits, cache, breaker, degraded answers, a
`tool` event and a usage row each), and its answer goes back as a `tool` message. Broken arguments
are repaired when `json_repair` can make an object of them (noted), else reported to the model
as that call's answer ("not valid JSON: ..., call again"), as are unknown tools and arguments
that do not fit the tool's schema: the model, not the step, fixes its own mistakes. After
`max_rounds` rounds of calls, one last request with `tool_choice="none"` asks for the answer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import json_repair

from storyloom.agents.call import AgentCall
from storyloom.errors import NotFoundError, UserError
from storyloom.flow.context import StepContext
from storyloom.llm.types import Message, ToolCall

__all__ = ["ToolLoop", "parse_arguments", "run_tool_loop"]


@dataclass(slots=True)
class ToolLoop:
    """How a loop went: the final `text`, the rounds of tool calls, each call's record, the whole
    conversation, and whether any tool answered degraded (the answer was written without it)."""

    text: str
    rounds: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    model_calls: int = 0

    @property
    def degraded(self) -> bool:
        return any(c.get("degraded") for c in self.calls)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "rounds": self.rounds, "calls": self.calls, "degraded": self.degraded}


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, bool, str | None]:
    """(arguments, repaired, problem): a model's arguments text as an object, repaired if need be."""
    if not raw.strip():
        return {}, False, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fixed = json_repair.loads(raw)
        if isinstance(fixed, dict) and fixed:
            return fixed, True, None
        return None, False, f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return None, False, "the arguments must be a JSON object"
    return value, False, None


async def run_tool_loop(
    ctx: StepContext[Any],
    call: AgentCall,
    messages: list[Message],
    specs: list[dict[str, Any]],
    *,
    max_rounds: int = 3,
    tool_choice: str | dict[str, Any] = "auto",
    max_tokens: int | None = None,
    stream: bool = True,
) -> ToolLoop:
    """Run the loop for one step; `specs` are the offered tools' OpenAI entries."""
    history: list[Message] = list(messages)
    loop = ToolLoop(text="", messages=history)
    choice: str | dict[str, Any] = tool_choice
    for round_no in range(max_rounds + 1):
        last = round_no == max_rounds
        result = await call.complete(
            history,
            tools=specs,
            tool_choice="none" if last else choice,
            max_tokens=max_tokens,
            stream=stream,
        )
        loop.model_calls += 1
        if not result.tool_calls or last:
            loop.text = result.text
            history.append({"role": "assistant", "content": result.text})
            return loop
        loop.rounds += 1
        history.append(
            {
                "role": "assistant",
                "content": result.text or None,
                "tool_calls": [c.to_wire() for c in result.tool_calls],
            }
        )
        answers = await asyncio.gather(*(_run_one(ctx, c, loop) for c in result.tool_calls))
        for c, content in zip(result.tool_calls, answers, strict=True):
            history.append({"role": "tool", "tool_call_id": c.id, "content": content})
        choice = "auto"  # a forced first call must not force every round
    return loop  # not reached: the last round always returns


async def _run_one(ctx: StepContext[Any], tc: ToolCall, loop: ToolLoop) -> str:
    """One call's answer for the model (JSON text), recorded in `loop.calls`."""
    record: dict[str, Any] = {"id": tc.id, "tool": tc.name, "arguments": tc.arguments}
    loop.calls.append(record)
    arguments, repaired, problem = parse_arguments(tc.arguments)
    record["repaired"] = repaired
    if arguments is None:
        record["error"] = problem
        return json.dumps({"error": f"{problem}; call {tc.name} again with a valid JSON object"})
    try:
        result = await ctx.tool(tc.name, **arguments)
    except (NotFoundError, UserError) as exc:  # unknown tool, arguments outside its schema
        record["error"] = str(exc)
        return json.dumps({"error": str(exc)}, ensure_ascii=False)
    record.update(degraded=result.degraded, cached=result.cached, reason=result.reason)
    output = result.output
    if result.degraded and isinstance(output, dict):
        output = {**output, "degraded": True}
    return json.dumps(output, ensure_ascii=False, default=str)
