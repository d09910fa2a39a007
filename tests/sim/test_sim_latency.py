"""The latency model: latency_s and ttft + n / tokens_per_s are honoured, also with many streams at once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

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


def test_jitter_spreads_each_answers_timing_deterministically() -> None:
    from storyloom.sim.answer import build_answer, content_key
    from storyloom.sim.config import ModelProfile
    from storyloom.sim.prompt import analyse

    def timing(profile: ModelProfile, i: int) -> tuple[float, float]:
        messages = [{"role": "user", "content": f"Chapter {i}: Alice runs to the pier."}]
        body = {"model": "m", "messages": messages}
        answer = build_answer(
            facts=analyse(messages),
            profile=profile,
            key=content_key(7, body),
            json_wanted=False,
            max_tokens=None,
        )
        return answer.ttft_s, answer.completion_tokens / (answer.total_s - answer.ttft_s)

    steady = ModelProfile(ttft_s=2.0, tokens_per_s=60.0, answer_tokens=40)
    assert all(timing(steady, i) == (2.0, pytest.approx(60.0)) for i in range(20))
    spread = ModelProfile(ttft_s=2.0, tokens_per_s=60.0, answer_tokens=40, jitter=0.3)
    timings = [timing(spread, i) for i in range(200)]
    ttfts = [t for t, _ in timings]
    rates = [r for _, r in timings]
    assert all(1.4 <= t <= 2.6 for t in ttfts) and max(ttfts) - min(ttfts) > 0.8
    assert all(41.9 <= r <= 78.1 for r in rates) and max(rates) - min(rates) > 20
    assert timing(spread, 5) == timing(spread, 5)  # the same request: the same timing
