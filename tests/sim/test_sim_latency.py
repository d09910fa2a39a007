"""The latency model: latency_s and ttft + n / tokens_per_s are honoured, also with many streams at once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

MSGS = [{"role": "user", "content": "Characters: Alice, Bob. Alice runs to the pier."}]


async def timed_stream(client: httpx.AsyncClient, url: str, model: str) -> tuple[float, float, int]:
    """(time to first content, total time, completion tokens) of one streamed answer."""
    payload = {"model": model, "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}}
    start = time.monotonic()
    first = 0.0
    tokens = 0
    async with client.stream("POST", f"{url}/chat/completions", json=payload) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"][0]["delta"].get("content") and not first:
                first = time.monotonic() - start
    return first, time.monotonic() - start, tokens


async def test_latency_s_is_exact_per_model(sim: Any) -> None:
    sim.configure(models={"one": {"latency_s": 0.6, "ttft_s": 0.2}, "two": {"latency_s": 1.2}})
    async with httpx.AsyncClient(timeout=10) as client:
        (f1, t1, _), (_, t2, _) = await asyncio.gather(
            timed_stream(client, sim.url, "one"), timed_stream(client, sim.url, "two")
        )
    assert 0.19 <= f1 <= 0.5
    assert 0.59 <= t1 <= 0.9
    assert 1.19 <= t2 <= 1.5


async def test_ttft_plus_tokens_per_second(sim: Any) -> None:
    sim.configure(models={"paced": {"ttft_s": 0.1, "tokens_per_s": 400.0, "answer_tokens": 200}})
    async with httpx.AsyncClient(timeout=10) as client:
        first, total, tokens = await timed_stream(client, sim.url, "paced")
    expected = 0.1 + tokens / 400.0
    assert tokens >= 200
    assert 0.09 <= first <= 0.4
    assert expected - 0.01 <= total <= expected + 0.3


async def test_non_streaming_latency(sim: Any) -> None:
    sim.configure(default={"latency_s": 0.4})
    async with httpx.AsyncClient(timeout=10) as client:
        start = time.monotonic()
        r = await client.post(f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS})
        elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert 0.39 <= elapsed <= 0.8
