"""Prompt layout of the book agents: one system message for all, then the shared part, then the task.

Providers (DeepSeek, OpenAI) bill a prompt prefix they have seen recently at a fraction of the
price, matched byte for byte from the first token. So every book and chapter agent sends
`[system: the same sentence for every agent] [user: what the agents of this chapter share (bible,
memory, plan)] [user: this agent's role and task]`: the role, which differs per agent, comes after
the shared part, never before it.

Schemas are shown inlined (nested objects written out, no `$defs`), fenced as ```json last, which
is what models follow best and what the simulator reads.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel

from storyloom.llm.types import Message

__all__ = ["SYSTEM", "inline_schema", "layout", "schema_fence"]

SYSTEM = {
    "zh": "你是一个长篇小说创作团队的成员。请严格依据共享的设定、记忆与计划工作，用中文回答。",
    "en": "You are a member of a team writing a long novel. Work strictly from the shared bible, memory "
    "and plan, and answer in English.",
}

_ASK = {
    "zh": "请只输出一个符合以下 JSON Schema 的 JSON 对象：",
    "en": "Answer with only one JSON object that follows this JSON Schema:",
}


def layout(language: str, shared: str, task: str) -> list[Message]:
    """The three messages; `shared` must be byte-identical for every agent of one chapter."""
    lang = "zh" if language == "zh" else "en"
    return [
        {"role": "system", "content": SYSTEM[lang]},
        {"role": "user", "content": shared},
        {"role": "user", "content": task},
    ]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs.get(ref.rsplit("/", 1)[-1], {}), defs)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$defs", "default") or (key == "title" and isinstance(value, str)):
                continue
            out[key] = _inline(value, defs)
        if isinstance(out.get("properties"), dict):
            out["required"] = list(out["properties"])  # ask for everything, accept less
        return out
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@functools.cache
def _schema_json(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    return json.dumps(_inline(schema, schema.get("$defs", {})), ensure_ascii=False)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with nested models written in place (no `$defs`, titles, defaults)."""
    loaded: dict[str, Any] = json.loads(_schema_json(model))
    return loaded


def schema_fence(model: type[BaseModel], language: str, *, items: tuple[str, int] | None = None) -> str:
    """The instruction and fenced schema a task ends with; `items` = (array property, exact count)."""
    schema = inline_schema(model)
    if items is not None:
        name, count = items
        prop = schema.get("properties", {}).get(name)
        if isinstance(prop, dict):
            prop["minItems"] = prop["maxItems"] = count
    lang = "zh" if language == "zh" else "en"
    return f"{_ASK[lang]}\n```json\n{json.dumps(schema, ensure_ascii=False)}\n```"
