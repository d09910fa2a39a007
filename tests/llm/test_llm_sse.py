"""The provider stream reader: SSE split by blocks whatever their boundaries, and paced reads."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response, StreamingResponse

from storyloom.errors import BadResponseError, StreamCutError
from storyloom.llm import sse as sse_mod
from storyloom.llm.client import HttpModelClient
from storyloom.llm.sse import ReadPacing, SseDataParser, read_pacing
from storyloom.llm.types import ChatRequest
from storyloom.sim import SimHandle

sys.path.insert(0, str(Path(__file__).parent))
from _fake_provider import chunk, serve, sse

MSGS = [{"role": "user", "content": "write a story"}]

# Every way a provider frames events: LF and CRLF, with and without the space after `data:`,
# comments, other fields, an event split over several lines of other fields, [DONE].
WIRE = (
    b": keep-alive comment\n\n"
    b'data: {"n": 1}\n\n'
    b'data:{"n": 2}\r\n\r\n'
    b"event: message\nid: 7\nretry: 100\n"
    b'data: {"n": 3, "text": "caf\xc3\xa9 \xe6\x96\x87"}\n\n'
    b'data:  {"n": 4}  \r\n\r\n'
    b"data: [DONE]\n\n"
)
PAYLOADS = [b'{"n": 1}', b'{"n": 2}', b'{"n": 3, "text": "caf\xc3\xa9 \xe6\x96\x87"}', b'{"n": 4}', b"[DONE]"]


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=MSGS, **kw)


def _feed_all(blocks: list[bytes]) -> list[bytes]:
    parser = SseDataParser()
    out: list[bytes] = []
    for block in blocks:
        out += parser.feed(block)
    return out + parser.close()


def test_one_block_gives_every_payload_in_order() -> None:
    assert _feed_all([WIRE]) == PAYLOADS


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_any_split_into_two_blocks_gives_the_same_payloads(cut: int) -> None:
    assert _feed_all([WIRE[:cut], WIRE[cut:]]) == PAYLOADS


def test_byte_by_byte_blocks_and_empty_blocks_give_the_same_payloads() -> None:
    blocks = [WIRE[i : i + 1] for i in range(len(WIRE))]
    blocks.insert(5, b"")
    assert _feed_all(blocks) == PAYLOADS


def test_a_last_line_without_newline_is_returned_by_close_only() -> None:
    parser = SseDataParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'{"a": 1}']
    assert parser.feed(b": 2}") == []
    assert parser.close() == [b'{"b": 2}']
    assert parser.close() == []


def test_a_line_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse_mod, "MAX_LINE_BYTES", 100)
    parser = SseDataParser()
    assert parser.feed(b"data: " + b"x" * 90) == []
    with pytest.raises(sse_mod.SseLineTooLong):
        parser.feed(b"x" * 20)


def _raw(blocks: list[bytes], gap_s: float) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block
            await asyncio.sleep(gap_s)

    return StreamingResponse(body(), media_type="text/event-stream")


def _wire(*docs: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\r\n\r\n" for d in docs)


async def test_client_reads_events_split_across_blocks_with_crlf_and_comments() -> None:
    wire = (
        b": hello\n\n"
        + _wire(chunk("Once "), chunk("upon a "))
        + b"data:"
        + json.dumps(chunk("time")).encode()
        + b"\n\n"
        + _wire(chunk(finish="stop"), chunk(usage={"prompt_tokens": 5, "completion_tokens": 3, "x": 0}))
        + b"data: [DONE]\n\n"
    )
    cuts = [7, 30, 31, 95, 140, len(wire) - 3]  # mid-comment, mid-line, between CR and LF, ...
    blocks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

    async def h(body: dict[str, Any]) -> Response:
        return _raw(blocks, 0.01)

    async with serve(h) as (url, _):
        c = HttpModelClient(url, None)
        deltas: list[str] = []
        r = await c.chat(req(), deltas.append)
        await c.aclose()
    assert "".join(deltas) == "Once upon a time" and all(deltas)
    assert r.text == "Once upon a time" and r.finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 3)


async def test_a_block_of_several_chunks_is_one_delta_and_text_before_a_bad_chunk_gets_through() -> None:
    """A read that holds several chunks calls the delta callback once with their joined text; a
    malformed chunk after some text still lets that text reach the caller before the error."""
    good = _wire(chunk("Once "), chunk("upon a "), chunk("time"))
    end = _wire(chunk(finish="stop")) + b"data: [DONE]\n\n"

    async def whole(body: dict[str, Any]) -> Response:
        return _raw([good + end], 0.01)

    async def broken(body: dict[str, Any]) -> Response:
        return _raw([good + b"data: {not json\n\n" + end], 0.01)

    async with serve(whole) as (url, _):
        c = HttpModelClient(url, None)
        deltas: list[str] = []
        r = await c.chat(req(), deltas.append)
        await c.aclose()
    assert deltas == ["Once upon a time"] and r.text == "Once upon a time"
    async with serve(broken) as (url, _):
        c = HttpModelClient(url, None)
        deltas = []
        with pytest.raises(BadResponseError, match="not JSON"):
            await c.chat(req(), deltas.append)
        await c.aclose()
    assert deltas == ["Once upon a time"]


async def test_a_line_past_the_limit_is_a_bad_response(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse_mod, "MAX_LINE_BYTES", 1000)

    async def h(body: dict[str, Any]) -> Response:
        return _raw([_wire(chunk("a")), b"data: " + b"x" * 600, b"y" * 600], 0.01)

    async with serve(h) as (url, _):
        c = HttpModelClient(url, None)
        with pytest.raises(BadResponseError, match="longer than"):
            await c.chat(req())
        await c.aclose()


def _arrivals(times: list[float], gap_s: float) -> int:
    """How many separate moments the deltas arrived in (a new one after a gap of `gap_s`)."""
    return 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > gap_s)


async def _timed_chat(url: str, *, pace: bool) -> tuple[list[str], list[float], str]:
    c = HttpModelClient(url, None, pace_reads=pace)
    texts: list[str] = []
    times: list[float] = []

    def on_delta(text: str) -> None:
        texts.append(text)
        times.append(time.monotonic())

    r = await c.chat(req(), on_delta)
    await c.aclose()
    return texts, times, r.text


async def test_paced_reads_take_several_chunks_per_read_and_lose_nothing() -> None:
    words = [f"w{i} " for i in range(30)]

    async def h(body: dict[str, Any]) -> Response:
        return sse([*(chunk(w) for w in words), chunk(finish="stop"), "[DONE]"], delay_s=0.01)

    pacing = read_pacing()
    pacing.min_interval_s = pacing.max_interval_s = 0.1
    async with serve(h) as (url, _):
        texts, times, text = await _timed_chat(url, pace=True)
        plain_texts, plain_times, _ = await _timed_chat(url, pace=False)
    assert "".join(texts) == "".join(plain_texts) == text == "".join(words)
    # ~0.3 s of chunks every 10 ms: read as they come, they arrive at about 30 moments; on 0.1 s
    # ticks, at about 4 (the first token at once, then one read per tick), each read's chunks
    # delivered as one text.
    assert _arrivals(times, 0.004) <= 7 < _arrivals(plain_times, 0.004)
    assert len(texts) <= 7 < len(plain_texts)
    assert pacing.ticks >= 2 and pacing.streams == 0


async def test_the_first_token_is_not_held() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse([chunk("first"), chunk(" second"), chunk(finish="stop")], delay_s=0.05, first_delay_s=0.3)

    pacing = read_pacing()
    pacing.min_interval_s = pacing.max_interval_s = 3.0
    async with serve(h) as (url, _):
        c = HttpModelClient(url, None)
        start = time.monotonic()
        got: list[float] = []
        r = await c.chat(req(), lambda t: got.append(time.monotonic() - start))
        await c.aclose()
    assert r.ttft_s is not None and r.ttft_s < 2.0 and got[0] < 2.0  # not 0.3 s + a 3 s tick
    assert r.text == "first second"


async def test_a_paced_connection_goes_back_to_the_pool_able_to_read() -> None:
    async def h(body: dict[str, Any]) -> Response:
        return sse([chunk("a"), chunk("b"), chunk("c"), chunk(finish="stop"), "[DONE]"], delay_s=0.02)

    pacing = read_pacing()
    pacing.min_interval_s = pacing.max_interval_s = 0.05
    async with serve(h) as (url, _):
        c = HttpModelClient(url, None, total_timeout_s=5.0)
        for _ in range(4):  # one keep-alive connection, reused each time
            assert (await c.chat(req())).text == "abc"
        results = await asyncio.gather(*(c.chat(req()) for _ in range(5)))
        await c.aclose()
    assert [r.text for r in results] == ["abc"] * 5
    assert not pacing._paused


async def test_a_stream_cut_while_paused_keeps_its_partial_text(sim: SimHandle) -> None:
    sim.configure(faults={"stream_cut": 1.0})
    pacing = read_pacing()
    pacing.min_interval_s = pacing.max_interval_s = 0.05
    c = HttpModelClient(sim.url, None)
    got: list[str] = []
    with pytest.raises(StreamCutError) as info:
        await c.chat(req(), got.append)
    await c.aclose()
    assert got and info.value.partial_text == "".join(got)
    assert pacing.streams == 0 and not pacing._paused


class _Transport(asyncio.Transport):
    def __init__(self, reading: bool = True) -> None:
        super().__init__()
        self.reading = reading
        self.closing = False
        self.calls: list[str] = []

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True


async def test_pacing_resumes_only_what_it_paused_on_one_shared_tick() -> None:
    pacing = ReadPacing(asyncio.get_running_loop(), min_interval_s=0.05, max_interval_s=0.05)
    a, b, held = _Transport(), _Transport(), _Transport(reading=False)  # held: aiohttp's own pause
    for t in (a, b, held):
        pacing.pause(t)
    pacing.pause(a)  # twice in one tick: one pause
    assert a.calls == ["pause"] and b.calls == ["pause"] and held.calls == []
    await asyncio.sleep(0.12)
    assert pacing.ticks == 1 and a.calls == b.calls == ["pause", "resume"] and held.calls == []
    pacing.pause(a)
    pacing.release(a)  # the stream ended: resumed now, not at the tick
    pacing.release(b)  # not paused: nothing to do
    assert a.calls[-1] == "resume" and b.calls == ["pause", "resume"]
    b.closing = True
    pacing.pause(b)  # a closing transport is left alone
    assert b.calls == ["pause", "resume"]


def test_pacing_interval_stretches_with_streams() -> None:
    loop = asyncio.new_event_loop()
    try:
        p = ReadPacing(loop, min_interval_s=0.025, max_interval_s=0.1, reads_per_s=2000)
        assert p.interval_s() == 0.025
        p.streams = 100
        assert p.interval_s() == 0.05
        p.streams = 1000
        assert p.interval_s() == 0.1
        with pytest.raises(ValueError):
            ReadPacing(loop, min_interval_s=0.2, max_interval_s=0.1)
    finally:
        loop.close()


async def test_the_default_read_tick_is_at_most_half_the_delta_interval_at_any_load() -> None:
    """Pacing reads must not be what delays streamed text: at every number of streams the tick is
    no longer than half the interval the coalescer holds deltas for anyway."""
    from storyloom.flow.coalesce import DeltaPacing

    reads, deltas = ReadPacing(asyncio.get_running_loop()), DeltaPacing()
    for streams in (1, 10, 50, 100, 200, 400, 1000, 10_000):
        reads.streams = deltas.streaming = streams
        assert reads.interval_s() <= deltas.interval_s() / 2 + 1e-9, streams
    assert reads.interval_s() > 0.1  # and at hundreds of streams, reads are fewer than before
