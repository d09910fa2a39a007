"""Events: order, timestamps, and token deltas coalesced without losing or reordering text."""

from __future__ import annotations

import asyncio
from typing import Any

from storyloom.flow import DeltaPacing, EventKind, Flow, ListSink, NullSink, OnError, StepContext, run_flow


async def test_run_and_step_events_are_ordered_with_timestamps() -> None:
    async def step(ctx: StepContext) -> Any:
        await asyncio.sleep(0.01)
        return ctx.name

    flow = Flow("f")
    flow.add("a", step)
    flow.add("b", step, after=("a",))
    flow.add("c", step, after=("a",))
    sink = ListSink()
    await run_flow(flow, {"x": 1}, run_id="run-7", sink=sink)
    assert sink.kinds()[0] == EventKind.RUN_STARTED and sink.events[0].data == {"flow": "f"}
    assert sink.kinds()[-1] == EventKind.RUN_FINISHED and sink.events[-1].data["status"] == "completed"
    assert {e.run_id for e in sink.events} == {"run-7"}
    stamps = [e.ts for e in sink.events]
    assert stamps == sorted(stamps)
    for name in "abc":
        assert sink.kinds(name) == [EventKind.STEP_STARTED, EventKind.STEP_FINISHED]
        assert sink.of(EventKind.STEP_FINISHED)[0].data["elapsed_s"] >= 0.005
    order = [(e.kind, e.step) for e in sink.events]
    assert order.index((EventKind.STEP_FINISHED, "a")) < order.index((EventKind.STEP_STARTED, "b"))


async def test_many_deltas_become_few_events_with_text_in_order() -> None:
    pieces = [f"tok{i} " for i in range(300)]

    async def stream(ctx: StepContext) -> Any:
        for i, piece in enumerate(pieces):
            ctx.delta(piece)
            if i % 10 == 9:
                await asyncio.sleep(0.01)  # ~0.3 s of streaming
        return "done"

    flow = Flow("f")
    flow.add("writer", stream)
    sink = ListSink()
    await run_flow(flow, None, sink=sink, coalesce_s=0.05)
    deltas = sink.of(EventKind.STEP_DELTA)
    assert 3 <= len(deltas) <= 15, len(deltas)
    assert "".join(e.data["text"] for e in deltas) == "".join(pieces)
    kinds = sink.kinds("writer")
    assert kinds[0] == EventKind.STEP_STARTED
    assert kinds[-1] == EventKind.STEP_FINISHED
    assert set(kinds[1:-1]) == {EventKind.STEP_DELTA}


async def test_pending_text_is_flushed_before_finished_and_failed() -> None:
    async def quick(ctx: StepContext) -> Any:
        ctx.delta("a")  # a step's first text goes out at once
        ctx.delta("b")
        ctx.delta("c")  # the rest waits for the interval, or for the step's next event
        return 1

    async def broken(ctx: StepContext) -> Any:
        ctx.delta("half a sentence")
        raise RuntimeError("stream cut")

    flow = Flow("f")
    flow.add("quick", quick)
    flow.add("broken", broken, on_error=OnError.SKIP)
    sink = ListSink()
    await run_flow(flow, None, sink=sink, coalesce_s=10.0)
    assert [(e.kind, e.data.get("text")) for e in sink.events if e.step == "quick"] == [
        (EventKind.STEP_STARTED, None),
        (EventKind.STEP_DELTA, "a"),
        (EventKind.STEP_DELTA, "bc"),
        (EventKind.STEP_FINISHED, None),
    ]
    assert sink.kinds("broken") == [
        EventKind.STEP_STARTED,
        EventKind.STEP_DELTA,
        EventKind.STEP_FAILED,
        EventKind.STEP_SKIPPED,
    ]


async def test_custom_events_come_after_the_pending_text() -> None:
    async def step(ctx: StepContext) -> Any:
        ctx.delta("chapter one")
        ctx.emit("agent.parsed", fields=3)
        ctx.delta("")  # empty deltas are dropped
        return None

    flow = Flow("f")
    flow.add("s", step)
    sink = ListSink()
    await run_flow(flow, None, sink=sink)
    expected = [EventKind.STEP_STARTED, EventKind.STEP_DELTA, "agent.parsed", EventKind.STEP_FINISHED]
    assert sink.kinds("s") == expected
    assert sink.of("agent.parsed")[0].data == {"fields": 3}


async def test_zero_interval_emits_every_delta() -> None:
    async def step(ctx: StepContext) -> Any:
        for t in "xyz":
            ctx.delta(t)

    flow = Flow("f")
    flow.add("s", step)
    sink = ListSink()
    await run_flow(flow, None, sink=sink, coalesce_s=0)
    assert [e.data["text"] for e in sink.of(EventKind.STEP_DELTA)] == ["x", "y", "z"]


async def test_a_thousand_concurrent_streams_are_coalesced_per_step() -> None:
    async def stream(ctx: StepContext) -> Any:
        for _ in range(20):
            ctx.delta("t")
            await asyncio.sleep(0.005)

    flow = Flow("f")
    for i in range(1000):
        flow.add(f"s{i}", stream)
    sink = ListSink()
    await run_flow(flow, None, sink=sink, coalesce_s=0.05)
    deltas = sink.of(EventKind.STEP_DELTA)
    per_step: dict[str | None, str] = {}
    counts: dict[str | None, int] = {}
    for e in deltas:
        per_step[e.step] = per_step.get(e.step, "") + e.data["text"]
        counts[e.step] = counts.get(e.step, 0) + 1
    assert per_step == {f"s{i}": "t" * 20 for i in range(1000)}
    # at most one event per coalescing interval (plus the final flush), however busy the loop is;
    # how many tokens each event carries depends on the machine's speed, so it is not asserted
    for e in sink.of(EventKind.STEP_FINISHED):
        assert counts[e.step] <= e.data["elapsed_s"] / 0.05 + 2


async def test_null_sink_and_no_sink_run_silently() -> None:
    async def step(ctx: StepContext) -> Any:
        ctx.delta("ignored")
        ctx.emit("custom")
        return 5

    flow = Flow("f")
    flow.add("s", step)
    assert (await run_flow(flow, None, sink=NullSink())).outputs == {"s": 5}
    assert (await run_flow(flow, None)).outputs == {"s": 5}


async def test_every_event_is_json_and_nothing_follows_the_run_event() -> None:
    import json

    async def stream(ctx: StepContext) -> Any:
        ctx.delta("some text")
        await asyncio.sleep(0.01)
        ctx.delta("more")
        return {"ok": True}

    async def broken(ctx: StepContext) -> Any:
        ctx.delta("oops")
        raise ValueError("bad JSON from the model")

    flow = Flow("f")
    flow.add("a", stream)
    flow.add("b", broken, after=("a",), on_error=OnError.FALLBACK, fallback=lambda ctx: ctx.inputs["a"])
    flow.add("c", broken, after=("a",), on_error=OnError.SKIP)
    sink = ListSink()
    result = await run_flow(flow, None, sink=sink, coalesce_s=0.05)
    await asyncio.sleep(0.1)  # a stray coalescing timer would fire now
    for event in sink.events:
        json.dumps({"kind": event.kind, "step": event.step, "ts": event.ts, "data": event.data})
    assert sink.events[-1].kind == EventKind.RUN_FINISHED
    assert json.loads(json.dumps(result.outputs)) == result.outputs
    assert len(result.run_id) == 32  # generated when not given


async def test_pacing_stretches_the_interval_when_many_steps_stream_and_recovers() -> None:
    """400 streaming steps with a budget of 400 events/s: ~1 event per step per second, not 20."""
    pacing = DeltaPacing(min_interval_s=0.05, max_interval_s=1.0, max_events_per_s=400.0)

    seen: list[float] = []

    async def stream(ctx: StepContext) -> Any:
        for _ in range(60):
            ctx.delta("t")
            await asyncio.sleep(0.02)  # 1.2 s of streaming
        seen.append(pacing.interval_s())

    many, one = Flow("many"), Flow("one")
    for i in range(400):
        many.add(f"s{i}", stream)
    one.add("s0", stream)
    busy, quiet = ListSink(), ListSink()
    await run_flow(many, None, sink=busy, coalesce_s=pacing)
    assert seen[0] == 1.0  # 400 streaming steps at 400 events/s: one event per step per second
    assert pacing.streaming == 0  # every finished step was uncounted
    await run_flow(one, None, sink=quiet, coalesce_s=pacing)
    assert seen[-1] == 0.05  # alone again: every 50 ms
    busy_deltas = busy.of(EventKind.STEP_DELTA)
    assert "".join(e.data["text"] for e in busy_deltas if e.step == "s7") == "t" * 60
    assert "".join(e.data["text"] for e in quiet.of(EventKind.STEP_DELTA)) == "t" * 60
    assert len(busy_deltas) <= 400 * 3  # fixed 50 ms: about 400 * 24
