"""HttpModelClient against a real loopback HTTP server that sends exact wire bytes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from storyloom.errors import (
    BadRequestError,
    BadResponseError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitError,
    StreamCutError,
)
from storyloom.llm import client as client_mod
from storyloom.llm.client import HttpModelClient, parse_retry_after
from storyloom.llm.tokens import estimate_message_tokens, estimate_tokens
from storyloom.llm.types import ChatRequest
from storyloom.sim import SimHandle

sys.path.insert(0, str(Path(__file__).parent))
from _fake_provider import chunk, free_port, serve, sse

MSGS = [{"role": "user", "content": "write a story"}]


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=kw.pop("messages", MSGS), **kw)


async def test_streams_deltas_and_provider_usage() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse(
            [
                chunk("Once "),
                chunk("upon"),
                chunk(finish="stop"),
                chunk(usage={"prompt_tokens": 11, "completion_tokens": 7}),
                "[DONE]",
            ]
        )

    async with serve(h) as (url, seen):
        c = HttpModelClient(url, "sk-test", name="d1")
        deltas: list[str] = []
        r = await c.chat(req(), deltas.append)
        await c.aclose()
    assert deltas == ["Once ", "upon"]
    assert r.text == "Once upon" and r.finish_reason == "stop" and r.deployment == "d1"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7)
    assert r.ttft_s is not None and r.latency_s >= r.ttft_s
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert "response_format" not in seen[0]


async def test_estimates_usage_when_provider_sends_none_and_maps_json_schema() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse([chunk('{"a": 1}'), chunk(finish="stop"), "[DONE]"])

    async with serve(h) as (url, seen):
        c = HttpModelClient(url, None)
        r = await c.chat(req(json_schema={"type": "object", "properties": {"a": {}}}, max_tokens=50, seed=3))
        await c.aclose()
    assert r.usage.prompt_tokens == estimate_message_tokens(MSGS)
    assert r.usage.completion_tokens == estimate_tokens('{"a": 1}')
    assert seen[0]["response_format"] == {"type": "json_object"}
    assert seen[0]["max_tokens"] == 50 and seen[0]["seed"] == 3


async def test_non_streaming_json_answer() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return JSONResponse(
            {
                "model": "real",
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1},
            }
        )

    async with serve(h) as (url, seen):
        c = HttpModelClient(url, None)
        got: list[str] = []
        r = await c.chat(req(stream=False), got.append)
        await c.aclose()
    assert r.text == "hi" and r.model == "real" and got == ["hi"] and r.usage.total_tokens == 3
    assert "stream_options" not in seen[0]


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (429, {"retry-after-ms": "1500"}, RateLimitError, 1.5),
        (429, {"retry-after": "3"}, RateLimitError, 3.0),
        (503, {}, ProviderUnavailable, None),
        (400, {}, BadRequestError, None),
        (401, {}, ProviderAuthError, None),
        (403, {}, ProviderAuthError, None),
        (404, {}, BadRequestError, None),
        (422, {}, BadRequestError, None),
        (408, {}, ProviderError, None),
    ],
)
async def test_status_codes_become_typed_errors(
    status: int, headers: dict[str, str], kind: type[ProviderError], retry_after: float | None
) -> None:
    async def h(body: dict[str, Any]) -> Response:
        return JSONResponse({"error": {"message": "nope"}}, status_code=status, headers=headers)

    async with serve(h) as (url, _):
        c = HttpModelClient(url, None)
        with pytest.raises(kind) as info:
            await c.chat(req())
        await c.aclose()
    assert type(info.value) is kind
    assert info.value.status == status and info.value.retry_after_s == retry_after
    assert info.value.retryable is not issubclass(kind, BadRequestError)


async def test_a_rejected_key_is_one_fixed_sentence_without_the_body_or_the_key(sim: SimHandle) -> None:
    # Providers echo part of the key in a 401 body ("Incorrect API key provided: sk-abc***xyz").
    secret = "sk-live-0123456789abcdef"
    sim.configure(api_keys=["the-right-key"])
    c = HttpModelClient(sim.url, secret, name="primary")
    with pytest.raises(ProviderAuthError) as info:
        await c.chat(req())
    await c.aclose()
    message = str(info.value)
    assert info.value.status == 401 and not info.value.retryable
    assert "primary" in message and "HTTP 401" in message and sim.url.split("//")[1] in message
    assert secret not in message and "Incorrect API key" not in message
    assert sim.stats()["unauthorized"] == 1


def test_urls_in_messages_lose_their_credentials() -> None:
    from storyloom.llm.client import _safe_url

    assert (
        _safe_url("https://user:pw@api.example.com:8443/v1?key=sk-1#x") == "https://api.example.com:8443/v1"
    )
    assert HttpModelClient("https://u:sk-2@h/v1", None).name == "https://h/v1"


def test_retry_after_http_date() -> None:
    import email.utils
    import time

    import httpx

    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = parse_retry_after(httpx.Headers({"retry-after": date}))
    assert got is not None and 25 < got <= 31
    assert parse_retry_after(httpx.Headers({})) is None


async def test_stream_without_finish_reason_is_a_cut_with_partial_text() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse([chunk("half a "), chunk("sentence")])

    async with serve(h) as (url, _):
        c = HttpModelClient(url, None)
        with pytest.raises(StreamCutError) as info:
            await c.chat(req())
        await c.aclose()
    assert info.value.partial_text == "half a sentence"


async def test_garbage_body_is_bad_response() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse(["this is not json"])

    async def h2(body: dict[str, Any]) -> Response:
        return Response("<html>proxy error</html>", media_type="text/html")

    for handler in (h, h2):
        async with serve(handler) as (url, _):
            c = HttpModelClient(url, None)
            with pytest.raises(BadResponseError):
                await c.chat(req())
            await c.aclose()


async def test_ttft_deadline_then_total_deadline() -> None:
    async def stall(body: dict[str, Any]) -> Response:
        return sse([chunk("late"), chunk(finish="stop")], first_delay_s=5.0)

    async def slow(body: dict[str, Any]) -> Response:
        return sse([chunk("a"), chunk("b"), chunk("c"), chunk(finish="stop")], delay_s=0.4)

    async with serve(stall) as (url, _):
        c = HttpModelClient(url, None, ttft_timeout_s=0.3, total_timeout_s=10)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ProviderTimeout) as info:
            await c.chat(req())
        assert info.value.phase == "ttft" and loop.time() - t0 < 2.0
        await c.aclose()
    async with serve(slow) as (url, _):
        c = HttpModelClient(url, None, ttft_timeout_s=0.3, total_timeout_s=0.6)
        got: list[str] = []
        with pytest.raises(ProviderTimeout) as info:
            await c.chat(req(), got.append)
        assert info.value.phase == "total" and got[:1] == ["a"]
        await c.aclose()


async def test_connection_refused_is_a_connection_error() -> None:
    c = HttpModelClient(f"http://127.0.0.1:{free_port()}/v1", None, connect_timeout_s=1)
    with pytest.raises(ProviderConnectionError):
        await c.chat(req())
    await c.aclose()


async def test_instances_share_one_pool_per_base_url_until_the_last_closes() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse([chunk("x"), chunk(finish="stop"), "[DONE]"])

    async with serve(h) as (url, _):
        a, b = HttpModelClient(url, None), HttpModelClient(url + "/", None)
        await asyncio.gather(a.chat(req()), b.chat(req()))
        pools = client_mod._POOLS[asyncio.get_running_loop()].by_url
        assert len(pools) == 1 and pools[url].users == 2
        shared = pools[url].client
        await a.aclose()
        assert not shared.closed
        await b.chat(req())
        await b.aclose()
        assert shared.closed and url not in pools


async def test_connection_dropped_mid_stream_is_a_cut_with_partial_text(sim: SimHandle) -> None:
    sim.configure(faults={"stream_cut": 1.0})
    c = HttpModelClient(sim.url, None)
    got: list[str] = []
    with pytest.raises(StreamCutError) as info:
        await c.chat(req(), got.append)
    await c.aclose()
    assert got and info.value.partial_text == "".join(got)
