"""Exact-match response cache: same model, messages, parameters and version index → same answer.

Off for temperature > 0 unless the call names its variant (version index): then N versions stay N
different answers, and re-running version i (a resumed job) reuses answer i instead of paying again.
In-process (an ordered dict with TTL, LRU-evicted): a hit must cost less than a network hop.
Bounded by entries and by the bytes of the answers' text (chapter drafts are kilobytes each), and
expired entries are swept as new ones arrive, so a long-lived worker's cache stays its size.
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
    def __init__(self, ttl_s: float, max_entries: int = 10_000, max_bytes: int = 32_000_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[float, ChatResult]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> ChatResult | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, result = item
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return result

    def put(self, key: str, result: ChatResult) -> None:
        size = _size(result)
        if size > self.max_bytes:
            return
        now = time.monotonic()
        self._drop(key)
        self._data[key] = (now + self.ttl_s, result)
        self.bytes += size
        # Oldest first: over a bound, or expired (the TTL is one value, so the front expires first).
        while self._data:
            oldest, (expires, _) = next(iter(self._data.items()))
            if len(self._data) <= self.max_entries and self.bytes <= self.max_bytes and expires > now:
                break
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= _size(item[1])


def _size(result: ChatResult) -> int:
    """What an entry costs, roughly: its text in UTF-8 plus a fixed overhead."""
    return 400 + len(result.text.encode())
