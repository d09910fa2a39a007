"""Structured answers: ask for a pydantic model, parse defensively, retry once, then degrade.

Real models answer prose where JSON was asked, wrap it in fences, cut it off mid-stream. The
policy, in one place for every app: parse what came (`agents.parsing`); if nothing validates, ask
once more with a firm "JSON only" note; if that fails too, use the caller's `default()` and record
why in the run (`AgentRun.degraded`), or raise `OutputParseError` when there is no default.
Provider errors degrade only when the caller says the step is optional, and never when the
provider refused the request itself (bad key, bad request) or the budget is spent: a default
cannot fix those, and every later call of the run would meet them too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from storyloom.agents.call import AgentCall
from storyloom.agents.parsing import parse_structured, prompt_schema
from storyloom.errors import (
    BadRequestError,
    BudgetExceededError,
    OutputParseError,
    ProviderError,
    StreamCutError,
)
from storyloom.llm.types import Message

__all__ = ["JSON_MAX_TOKENS", "NOT_DEGRADABLE", "ask_json", "schema_block", "stricter", "wire_schema"]

M = TypeVar("M", bound=BaseModel)

JSON_MAX_TOKENS = 1500
# Never degraded into a default or a kept text: they recur on every call of the run (a provider
# that refuses the request or our key, a spent budget), so a default would hide a dead run.
NOT_DEGRADABLE: tuple[type[ProviderError], ...] = (BadRequestError, BudgetExceededError)

_STRICT = {
    "zh": "上一次的回答无法解析。请严格只输出一个符合上面 JSON Schema 的 JSON 对象，"
    "使用双引号，不要任何解释或多余文字。",
    "en": "Your last answer could not be parsed. Output only one JSON object that follows the JSON "
    "Schema above, with double quotes and nothing else.",
}
_ASK = {
    "zh": "请只输出一个符合以下 JSON Schema 的 JSON 对象：",
    "en": "Answer with only one JSON object that follows this JSON Schema:",
}


def stricter(messages: list[Message], language: str) -> list[Message]:
    """The same prompt plus a firm "JSON only" note, for the one retry after a parse failure."""
    note = _STRICT.get(language, _STRICT["en"])
    return [*messages, {"role": "user", "content": note}]


@functools.cache
def schema_block(model: type[BaseModel], language: str = "en") -> str:
    """The instruction and fenced schema a prompt ends with (the simulator and humans read it).

    Cached: pydantic builds a schema anew on every call (about a millisecond, and a reference
    cycle in its generator that only the collector frees)."""
    schema = json.dumps(prompt_schema(model), ensure_ascii=False)
    return f"{_ASK.get(language, _ASK['en'])}\n```json\n{schema}\n```"


@functools.cache
def wire_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema sent as `json_schema` (cached: building it costs about a millisecond)."""
    return model.model_json_schema()


async def ask_json(
    call: AgentCall,
    messages: list[Message],
    model: type[M],
    *,
    default: Callable[[], M] | None,
    optional: bool = True,
    max_tokens: int = JSON_MAX_TOKENS,
) -> M:
    """Ask for `model`; retry once with a stricter instruction; then degrade to `default()`.

    `optional`: a provider error degrades to the default too (else it propagates, so the flow's
    policy decides). Refused requests (`BadRequestError`, e.g. a rejected key) always propagate.
    """
    schema = wire_schema(model)
    problem = ""
    for attempt, msgs in enumerate((messages, stricter(messages, call.language))):
        try:
            text = await call.chat(msgs, json_schema=schema, max_tokens=max_tokens)
        except StreamCutError as exc:
            text = exc.partial_text  # the repairer can often close a cut JSON object
            call.run.notes.append("stream cut")
        except ProviderError as exc:
            if not optional or default is None or isinstance(exc, NOT_DEGRADABLE):
                raise
            call.run.degraded = f"provider error, used a default: {exc}"
            return default()
        try:
            parsed = parse_structured(text, model)
        except OutputParseError as exc:
            problem = str(exc)
            call.run.notes.append(f"attempt {attempt + 1}: {problem}")
            continue
        if parsed.how != "clean":
            call.run.notes.append(f"JSON {parsed.how}")
        return parsed.value
    if default is None:
        raise OutputParseError(f"unparseable after a stricter retry: {problem}")
    call.run.degraded = f"unparseable after a stricter retry ({problem}), used a default"
    return default()
