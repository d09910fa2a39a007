"""Function calling in the simulator: which tools a request calls, with which arguments.

Deterministic from the request (seed and body): a request that offers `tools` gets `tool_calls`
instead of text when

- `tool_choice` is `"required"` or names a function, or it is `"auto"` (or absent) and no tool has
  answered since the last user message (a model asks once, then answers from the results);
- `tool_choice` `"none"` never calls.

Which tools: the named one; else each offered tool whose name (or its words, `web_search` →
"web search") appears in the last user message; else the first offered. `tool calls: N` in the
prompt asks for N calls (round-robin over the chosen tools), e.g. three searches at once.
Arguments follow each tool's `parameters` schema; a string property named like a query
(`query`, `q`, `question`, `topic`, `keywords`, `text`) gets the last user message's first line.
The `broken_tool_args` fault cuts one call's arguments short (invalid JSON), as real models do.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from storyloom.sim.answer import keyed_rng
from storyloom.sim.prompt import PromptFacts, message_text
from storyloom.sim.schema_values import value_for_schema

__all__ = ["ToolPlan", "plan_tool_calls"]

_QUERY_KEYS = ("query", "q", "question", "topic", "keywords", "keyword", "text", "search", "term")
_CALLS = re.compile(r"tool calls\s*[:=]\s*(\d{1,2})", re.I)
_MAX_CALLS = 8


class ToolPlan:
    """The calls of one answer: [(id, name, arguments JSON text)]."""

    __slots__ = ("calls",)

    def __init__(self, calls: list[tuple[str, str, str]]) -> None:
        self.calls = calls

    @property
    def tokens(self) -> int:
        return sum(4 + max(1, (len(name) + len(args)) // 4) for _, name, args in self.calls)


def _functions(tools: Any) -> list[dict[str, Any]]:
    out = []
    for t in tools if isinstance(tools, list) else ():
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.append(fn)
    return out


def _last_user(messages: list[Any]) -> tuple[str, bool]:
    """(the last user message's text, whether a tool answered after it)."""
    answered = False
    for m in reversed(messages):
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool":
            answered = True
        if m.get("role") == "user":
            return message_text(m), answered
    return "", answered


def plan_tool_calls(body: dict[str, Any], facts: PromptFacts, key: bytes, broken: bool) -> ToolPlan | None:
    """The tool calls this request answers with, or None for a text answer."""
    functions = _functions(body.get("tools"))
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none":
        return None
    messages = body.get("messages") or []
    last, answered = _last_user(messages)
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if named is None and choice != "required" and answered:
        return None
    if named is not None:
        chosen = [f for f in functions if f["name"] == named] or functions[:1]
    else:
        lowered = last.lower()
        chosen = [
            f
            for f in functions
            if f["name"].lower() in lowered or f["name"].replace("_", " ").lower() in lowered
        ] or functions[:1]
    all_text = "\n".join(message_text(m) for m in messages)
    found = _CALLS.findall(all_text)
    n = min(_MAX_CALLS, max(1, int(found[-1]))) if found else len(chosen)
    rng = keyed_rng(key, "tools")
    plain = _CALLS.sub("", last)
    first_line = next((ln.strip(" .,;") for ln in plain.splitlines() if ln.strip(" .,;")), "") or "search"
    calls = []
    for i in range(n):
        fn = chosen[i % len(chosen)]
        args = _arguments(fn, facts, rng, first_line[:120], i)
        calls.append((f"call_{key.hex()[:12]}_{i}", fn["name"], json.dumps(args, ensure_ascii=False)))
    if broken and calls:
        i = rng.randrange(len(calls))
        call_id, name, text = calls[i]
        calls[i] = (call_id, name, text[: max(1, len(text) // 2)])
    return ToolPlan(calls)


def _arguments(
    fn: dict[str, Any], facts: PromptFacts, rng: random.Random, query: str, i: int
) -> dict[str, Any]:
    schema = fn.get("parameters")
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return {}
    props = schema.get("properties") or {}
    generated = value_for_schema({"type": "object", "properties": props, "required": list(props)}, facts, rng)
    args = dict(generated) if isinstance(generated, dict) else {}
    for name, prop in props.items():
        if name.lower() in _QUERY_KEYS and isinstance(prop, dict) and prop.get("type", "string") == "string":
            args[name] = query if i == 0 else f"{query} ({i + 1})"
    required = set(schema.get("required") or ())
    # Optional properties stay out unless the generator must (models leave defaults alone).
    return {k: v for k, v in args.items() if k in required or k.lower() in _QUERY_KEYS}
