"""Checkpoints: saved before dependents start, loaded once, and a re-run runs only unfinished steps."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from storyloom.errors import StepFailedError
from storyloom.flow import EventKind, Flow, ListSink, MemoryCheckpoints, StepContext, run_flow


class Recorder:
    """Step functions that count their calls and can be told to fail or hang."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail: set[str] = set()
        self.hang: set[str] = set()

    async def __call__(self, ctx: StepContext) -> Any:
        self.calls[ctx.path] += 1
        if ctx.name in self.fail:
            raise RuntimeError(f"{ctx.name} crashed")
        if ctx.name in self.hang:
            await asyncio.sleep(30)
        return {"step": ctx.path, "inputs": {k: v["step"] for k, v in ctx.inputs.items() if v}}


def chapter(step: Recorder) -> Flow:
    flow = Flow("chapter")
    flow.add("director", step)
    flow.add("plot", step, after=("director",))
    flow.add("character", step, after=("plot",))
    flow.add("scene", step, after=("plot",))
    flow.add("synthesis", step, after=("character", "scene"))
    flow.add("quality", step, after=("synthesis",))
    return flow


async def test_a_rerun_after_a_failure_runs_only_the_unfinished_steps() -> None:
    step = Recorder()
    step.fail.add("synthesis")
    flow = chapter(step)
    store = MemoryCheckpoints()
    with pytest.raises(StepFailedError):
        await run_flow(flow, None, run_id="job-1", checkpoints=store)
    assert set(store.runs["job-1"]) == {"director", "plot", "character", "scene"}

    step.fail.clear()
    step.calls.clear()
    sink = ListSink()
    result = await run_flow(flow, None, run_id="job-1", checkpoints=store, sink=sink)
    assert set(step.calls) == {"synthesis", "quality"}
    assert result.restored == ["director", "plot", "character", "scene"]
    assert result.outputs["synthesis"]["inputs"] == {"character": "character", "scene": "scene"}
    assert [e.step for e in sink.of(EventKind.STEP_RESTORED)] == ["director", "plot", "character", "scene"]
    assert set(result.step_times) == {"synthesis", "quality"}

    # another run id shares nothing
    step.calls.clear()
    await run_flow(flow, None, run_id="job-2", checkpoints=store)
    assert len(step.calls) == 6


async def test_a_crash_mid_run_then_rerun_pays_only_for_steps_in_flight() -> None:
    step = Recorder()
    step.hang.add("scene")
    flow = chapter(step)
    store = MemoryCheckpoints()
    task = asyncio.create_task(run_flow(flow, None, run_id="job", checkpoints=store))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if "character" in store.runs.get("job", {}):
            break
    task.cancel()  # the worker dies while scene is in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(store.runs["job"]) == {"director", "plot", "character"}

    step.hang.clear()
    step.calls.clear()
    result = await run_flow(flow, None, run_id="job", checkpoints=store)
    assert set(step.calls) == {"scene", "synthesis", "quality"}
    assert len(result.outputs) == 6


class SlowStore(MemoryCheckpoints):
    """A store whose saves take time and record when they became durable."""

    def __init__(self) -> None:
        super().__init__()
        self.durable_at: dict[str, float] = {}
        self.loads = 0

    async def load(self, run_id: str) -> dict[str, Any]:
        self.loads += 1
        return await super().load(run_id)

    async def save(self, run_id: str, step: str, value: Any) -> None:
        await asyncio.sleep(0.05)
        await super().save(run_id, step, value)
        self.durable_at[step] = time.perf_counter()


async def test_a_step_is_durable_before_its_dependents_start_and_load_happens_once() -> None:
    started_at: dict[str, float] = {}

    async def step(ctx: StepContext) -> Any:
        started_at[ctx.path] = time.perf_counter()
        return ctx.path

    inner = Flow("inner")
    inner.add("a", step)
    inner.add("b", step, after=("a",))

    async def versions(ctx: StepContext) -> Any:
        outcomes = await ctx.fan_out(inner, [1, 2], max_parallel=2)
        return [o.ok for o in outcomes]

    flow = Flow("f")
    flow.add("root", step)
    flow.add("versions", versions, after=("root",))
    flow.add("last", step, after=("versions",))
    store = SlowStore()
    await run_flow(flow, None, run_id="r", checkpoints=store)
    assert store.loads == 1
    assert started_at["versions/v1/a"] >= store.durable_at["root"]
    assert started_at["versions/v1/b"] >= store.durable_at["versions/v1/a"]
    assert started_at["last"] >= store.durable_at["versions"]
    assert set(store.runs["r"]) == {
        "root",
        "versions",
        "last",
        "versions/v1/a",
        "versions/v1/b",
        "versions/v2/a",
        "versions/v2/b",
    }


async def test_fan_out_branches_restore_individually_after_a_crash() -> None:
    step = Recorder()
    inner = Flow("version")
    inner.add("plot", step)
    inner.add("write", step, after=("plot",))

    async def versions(ctx: StepContext) -> Any:
        outcomes = await ctx.fan_out(inner, [1, 2], max_parallel=2)
        return [o.ok for o in outcomes]

    flow = Flow("f")
    flow.add("versions", versions)
    store = MemoryCheckpoints()
    step.hang.add("write")
    task = asyncio.create_task(run_flow(flow, None, run_id="j", checkpoints=store))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if {"versions/v1/plot", "versions/v2/plot"} <= set(store.runs.get("j", {})):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    step.hang.clear()
    step.calls.clear()
    result = await run_flow(flow, None, run_id="j", checkpoints=store)
    assert set(step.calls) == {"versions/v1/write", "versions/v2/write"}
    assert result.outputs["versions"] == [True, True]
