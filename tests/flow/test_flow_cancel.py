"""Cancelling the task that awaits a run cancels every step, emits run.cancelled and leaks nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storyloom.flow import EventKind, Flow, ListSink, StepContext, run_flow


async def test_cancelling_a_run_cancels_every_step_and_sub_flow() -> None:
    running: set[str] = set()
    ended: dict[str, str] = {}

    async def slow(ctx: StepContext) -> Any:
        running.add(ctx.path)
        try:
            ctx.delta("partial text")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended[ctx.path] = "cancelled"
            raise
        finally:
            running.discard(ctx.path)

    version = Flow("version")
    version.add("write", slow)

    async def versions(ctx: StepContext) -> Any:
        await ctx.fan_out(version, [1, 2, 3], max_parallel=2)

    async def plot(ctx: StepContext) -> Any:
        return "plot"

    flow = Flow("f")
    flow.add("plot", plot)
    flow.add("character", slow, after=("plot",))
    flow.add("scene", slow, after=("plot",))
    flow.add("versions", versions, after=("plot",))
    flow.add("synthesis", slow, after=("character", "scene", "versions"))
    sink = ListSink()
    task = asyncio.create_task(run_flow(flow, None, sink=sink, coalesce_s=5.0))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(running) == 4:
            break
    assert running == {"character", "scene", "versions/v1/write", "versions/v2/write"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert running == set()
    in_flight = ("character", "scene", "versions/v1/write", "versions/v2/write")
    assert ended == dict.fromkeys(in_flight, "cancelled")
    assert asyncio.all_tasks() == {asyncio.current_task()}
    kinds = sink.kinds()
    assert kinds[-1] == EventKind.RUN_CANCELLED
    assert EventKind.STEP_FAILED not in kinds
    assert "synthesis" not in {e.step for e in sink.events}
    # pending delta text is not lost: flushed before run.cancelled
    deltas = {e.step: e.data["text"] for e in sink.of(EventKind.STEP_DELTA)}
    assert deltas == dict.fromkeys(in_flight, "partial text")


async def test_a_timeout_around_a_run_cancels_it() -> None:
    async def slow(ctx: StepContext) -> Any:
        await asyncio.sleep(30)

    flow = Flow("f")
    flow.add("a", slow)
    flow.add("b", slow)
    sink = ListSink()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await run_flow(flow, None, sink=sink)
    assert sink.events[-1].kind == EventKind.RUN_CANCELLED
    assert asyncio.all_tasks() == {asyncio.current_task()}
