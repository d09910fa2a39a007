"""The TTL cache of tool answers, keyed by the tool and its normalized input.

Normalized: the validated input model dumped as JSON with sorted keys, every string with its
whitespace collapsed and NFKC-normalized, so `"  rust  async "` and `"rust async"` are one entry
(seed 003 caches search answers for 600 s). An entry past its TTL is no longer a hit but is kept
(up to `stale_factor` × TTL) as the stand-in a degraded call may return: an old answer marked
`cached` and `degraded` beats none when the API is down.

In-process (an LRU of bounded size): a worker process serves its own conversations, and a miss
costs one call under the shared limits, which is what keeps the quota exact.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["CacheEntry", "ToolCache", "normalized_key"]


def _normalize(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFKC", value).split())
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def normalized_key(tool: str, args: BaseModel) -> str:
    """The cache key of a call: the tool name and a digest of its normalized input."""
    doc = json.dumps(_normalize(args.model_dump(mode="json")), sort_keys=True, ensure_ascii=False)
    return f"{tool}:{hashlib.sha256(doc.encode()).hexdigest()[:32]}"


@dataclass(slots=True)
class CacheEntry:
    output: Any
    stored_at: float
    fresh_until: float
    keep_until: float


class ToolCache:
    def __init__(self, max_entries: int = 10_000, stale_factor: float = 6.0) -> None:
        self.max_entries = max_entries
        self.stale_factor = stale_factor
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, *, now: float | None = None) -> Any | None:
        """A fresh answer, or None (a miss is counted)."""
        at = time.time() if now is None else now
        entry = self._entries.get(key)
        if entry is None or entry.fresh_until <= at:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.output

    def stale(self, key: str, *, now: float | None = None) -> CacheEntry | None:
        """An answer past its TTL but still kept: the best a degraded call can offer."""
        at = time.time() if now is None else now
        entry = self._entries.get(key)
        if entry is None or entry.keep_until <= at:
            return None
        return entry

    def put(self, key: str, output: Any, ttl_s: float, *, now: float | None = None) -> None:
        at = time.time() if now is None else now
        self._entries[key] = CacheEntry(output, at, at + ttl_s, at + ttl_s * self.stale_factor)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
