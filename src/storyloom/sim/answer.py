"""What the simulator will answer to one request: text, finish reason, token counts, timing.

Content is a pure function of (seed, request body without the streaming switches), so the same
request gives the same text whether streamed or not, at any concurrency. Faults are not part of it:
they come from the server's fault RNG, drawn in arrival order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from storyloom.llm.tokens import estimate_tokens
from storyloom.sim.config import ModelProfile
from storyloom.sim.prompt import PromptFacts, TargetLength
from storyloom.sim.schema_values import value_for_schema
from storyloom.sim.story import story_text, truncate_to_tokens

__all__ = ["Answer", "build_answer", "content_key", "keyed_rng", "mangle_json", "wants_json"]

_WIRE_ONLY_KEYS = ("stream", "stream_options")
_DEFAULT_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "content": {"type": "string"}},
}
_JSON_LONG_TEXT = TargetLength(80, "tokens")


@dataclass(slots=True, kw_only=True)
class Answer:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    ttft_s: float
    total_s: float


_TEXT_CACHE_SIZE = 2048
_text_cache: OrderedDict[tuple[Any, ...], tuple[str, str]] = OrderedDict()


def content_key(seed: int, body: dict[str, Any]) -> bytes:
    """A digest of the seed and the request body (streaming switches excluded)."""
    stable = {k: v for k, v in body.items() if k not in _WIRE_ONLY_KEYS}
    return hashlib.sha256(f"{seed}|{json.dumps(stable, sort_keys=True, default=str)}".encode()).digest()


def keyed_rng(key: bytes, purpose: str = "") -> random.Random:
    """An RNG determined by a content key; `purpose` gives independent streams from one key."""
    digest = hashlib.sha256(key + purpose.encode()).digest() if purpose else key
    return random.Random(int.from_bytes(digest[:8], "big"))


def wants_json(body: dict[str, Any], facts: PromptFacts) -> bool:
    """JSON is answered when response_format asks for it or the prompt carries a schema block."""
    fmt = body.get("response_format")
    asked = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    return asked or facts.schema is not None


def build_answer(
    *,
    facts: PromptFacts,
    profile: ModelProfile,
    key: bytes,
    json_wanted: bool,
    max_tokens: int | None,
    empty: bool = False,
) -> Answer:
    """Generate the text, cap it by max_tokens and compute its timing from the model's profile.

    Texts are cached by content key (LRU): a benchmark sends identical requests many times, and
    generating a long answer costs a fraction of a millisecond that would delay other streams.
    """
    cache_key = (key, profile.answer_tokens, profile.score_range, json_wanted, max_tokens, empty)
    cached = _text_cache.get(cache_key)
    if cached is None:
        cached = _generate(facts, profile, keyed_rng(key), json_wanted, max_tokens, empty)
        _text_cache[cache_key] = cached
        if len(_text_cache) > _TEXT_CACHE_SIZE:
            _text_cache.popitem(last=False)
    else:
        _text_cache.move_to_end(cache_key)
    text, finish = cached
    n = estimate_tokens(text)
    slow = fast = 1.0
    if profile.jitter:
        rng = keyed_rng(key, "latency")
        slow = rng.uniform(1.0 - profile.jitter, 1.0 + profile.jitter)
        fast = rng.uniform(1.0 - profile.jitter, 1.0 + profile.jitter)
    if profile.latency_s is not None:
        total = profile.latency_s * slow
        ttft = min(profile.ttft_s * slow, total)
    else:
        ttft = profile.ttft_s * slow
        total = ttft + n / (profile.tokens_per_s * fast)
    return Answer(text=text, finish_reason=finish, completion_tokens=n, ttft_s=ttft, total_s=total)


def _generate(
    facts: PromptFacts,
    profile: ModelProfile,
    rng: random.Random,
    json_wanted: bool,
    max_tokens: int | None,
    empty: bool,
) -> tuple[str, str]:
    if empty:
        text = ""
    elif json_wanted:
        target = facts.target or _JSON_LONG_TEXT
        value = value_for_schema(
            facts.schema or _DEFAULT_OBJECT_SCHEMA,
            facts,
            rng,
            score_range=profile.score_range,
            long_text=(target.amount, target.unit),
        )
        text = json.dumps(value, ensure_ascii=False)
    elif facts.target is not None:
        text = story_text(facts, rng, facts.target.amount, facts.target.unit)
    else:
        text = story_text(facts, rng, profile.answer_tokens, "tokens")
    finish = "stop"
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        text = truncate_to_tokens(text, max_tokens)
        finish = "length"
    return text, finish


def mangle_json(text: str, rng: random.Random, facts_prose: str) -> str:
    """The `prose_json` fault: what sloppy models send when asked for JSON (one of four shapes)."""
    variant = rng.randrange(4)
    if variant == 0:  # prose only, no JSON at all
        return facts_prose
    if variant == 1:  # the JSON buried inside chatter
        return f"Sure! Here is the result you asked for:\n{text}\nLet me know if you want any changes."
    if variant == 2 and text.endswith("}"):  # a trailing comma, which strict parsers reject
        return text[:-1] + ",}"
    return f"```json\n{text}\n```"  # fenced
