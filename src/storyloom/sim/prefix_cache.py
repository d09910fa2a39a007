"""The simulator's prompt cache: providers bill a prompt prefix they saw recently at a fraction.

DeepSeek and OpenAI match a new prompt's prefix against prompts recently sent with the same key
(in fixed-size blocks) and report the matched part as `prompt_cache_hit_tokens` /
`prompt_tokens_details.cached_tokens`. We do the same per API key: the serialized messages are cut
into blocks of `block_chars`; each block boundary's running hash is remembered (LRU, bounded); a
prompt's cached part is its longest run of remembered boundaries from the start.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from storyloom.llm.tokens import estimate_tokens
from storyloom.sim.prompt import message_text

__all__ = ["PrefixCache"]

_MAX_KEYS = 1000


class PrefixCache:
    def __init__(self, *, block_chars: int = 128, max_blocks_per_key: int = 200_000) -> None:
        self.block_chars = block_chars
        self.max_blocks = max_blocks_per_key
        self._keys: OrderedDict[str, OrderedDict[bytes, None]] = OrderedDict()

    def reset(self) -> None:
        self._keys.clear()

    def lookup_and_store(self, key: str | None, messages: list[Any], prompt_tokens: int) -> int:
        """Cached prompt tokens of this request (0 on a first sight), and remember its prefix."""
        text = "".join(
            f"\x00{m.get('role', '') if isinstance(m, dict) else ''}\x01{message_text(m)}" for m in messages
        )
        name = key or ""
        blocks = self._keys.get(name)
        if blocks is None:
            blocks = self._keys[name] = OrderedDict()
            if len(self._keys) > _MAX_KEYS:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(name)
        running = hashlib.blake2b(digest_size=16)
        hit_upto, hitting = 0, True
        step = self.block_chars
        for end in range(step, len(text) + 1, step):
            running.update(text[end - step : end].encode())
            digest = running.copy().digest()
            if hitting and digest in blocks:
                hit_upto = end
                blocks.move_to_end(digest)
            else:
                hitting = False
                blocks[digest] = None
        while len(blocks) > self.max_blocks:
            blocks.popitem(last=False)
        if not hit_upto:
            return 0
        return min(prompt_tokens, estimate_tokens(text[:hit_upto]))
