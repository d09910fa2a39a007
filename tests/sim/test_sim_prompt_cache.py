"""The simulator's prompt cache (per API key, as DeepSeek and OpenAI report it), the client's
parsing of it, and the ledger's price for cached tokens."""

from __future__ import annotations

from typing import Any

import httpx

from storyloom.llm.client import HttpModelClient
from storyloom.llm.ledger import PriceTable
from storyloom.llm.types import ChatRequest, Usage

SHARED = "The story bible: " + "Mara carries the last letter across the drowned empire. " * 40


def _body(task: str, stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "system", "content": "You write novels."}, {"role": "user", "content": SHARED}]
    return {
        "model": "sim-writer",
        "messages": [*messages, {"role": "user", "content": task}],
        "stream": stream,
    }


def test_a_repeated_prefix_is_reported_cached_per_key(sim: Any) -> None:
    with httpx.Client(base_url=sim.url, timeout=30) as client:
        first = client.post(
            "/chat/completions", json=_body("Plan chapter 1."), headers={"Authorization": "Bearer a"}
        )
        usage = first.json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == 0 == usage["prompt_cache_hit_tokens"]
        again = client.post(
            "/chat/completions", json=_body("Write chapter 1."), headers={"Authorization": "Bearer a"}
        )
        hit = again.json()["usage"]
        cached = hit["prompt_tokens_details"]["cached_tokens"]
        assert cached == hit["prompt_cache_hit_tokens"] and 0.8 * 600 < cached < hit["prompt_tokens"]
        assert hit["prompt_cache_miss_tokens"] == hit["prompt_tokens"] - cached
        other = client.post(
            "/chat/completions", json=_body("Write chapter 1."), headers={"Authorization": "Bearer b"}
        )
        assert other.json()["usage"]["prompt_cache_hit_tokens"] == 0  # another key has its own cache
    assert sim.stats()["cached_prompt_tokens"] == cached


async def test_the_client_reads_cached_tokens_from_a_stream(sim: Any) -> None:
    client = HttpModelClient(sim.url, "k", connect_timeout_s=5, ttft_timeout_s=30, total_timeout_s=60)
    try:
        request = ChatRequest(model="sim-writer", messages=_body("Plan.")["messages"], stream=True)
        await client.chat(request)
        second = await client.chat(ChatRequest(model="sim-writer", messages=_body("Write.")["messages"]))
    finally:
        await client.aclose()
    assert 0 < second.usage.cached_tokens < second.usage.prompt_tokens


def test_cached_prompt_tokens_cost_the_cached_price() -> None:
    prices = PriceTable({"m": (1.0, 2.0, 0.25), "plain": (1.0, 2.0)})
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=800_000)
    assert prices.cost(usage, "m") == 0.2 + 0.8 * 0.25
    assert prices.cost(usage, "plain") == 1.0  # no cached price: billed as input
    bundled = PriceTable.bundled()
    assert bundled.cost(usage, "deepseek-chat") < bundled.cost(
        Usage(prompt_tokens=1_000_000), "deepseek-chat"
    )
