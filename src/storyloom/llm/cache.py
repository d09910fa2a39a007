"""Exact-match response cache: same model, messages, parameters and version index → same answer.

Off for temperature > 0 unless the call names its variant (version index): then N versions stay N
different answers, and re-running version i (a resumed job) reuses answer i instead of paying again.
In-process (an ordered dict with TTL, LRU-evicted): a hit must cost less than a network hop.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict

from storyloom.llm.types import ChatRequest, ChatResult

__all__ = ["ResponseCache", "cache_key"]


def cache_key(request: ChatRequest) -> str | None:
    """The key of a cacheable request, or None when caching it would collapse distinct samples."""
    variant = request.meta.variant
    if request.temperature > 0 and variant is None:
        return None
    doc = [
        request.model,
        request.messages,
        request.temperature,
        request.max_tokens,
        request.json_schema,
        request.seed,
        variant,
        request.tools,
        request.tool_choice,
    ]
    raw = json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, ChatResult]] = OrderedDict()

    def get(self, key: str) -> ChatResult | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, result = item
        if expires <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return result

    def put(self, key: str, result: ChatResult) -> None:
        self._data[key] = (time.monotonic() + self.ttl_s, result)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
