"""Parallelism, proven by timestamps: no level barrier, independent steps overlap, fan-out is capped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from storyloom.errors import FlowError, StepFailedError
from storyloom.flow import Flow, ListSink, StepContext, run_flow

Spans = dict[str, tuple[float, float]]


def sleeper(spans: Spans, seconds: dict[str, float]) -> Callable[[StepContext], Awaitable[Any]]:
    async def step(ctx: StepContext) -> Any:
        start = time.perf_counter()
        await asyncio.sleep(seconds.get(ctx.name, 0.0))
        spans[ctx.path] = (start, time.perf_counter())
        return {"step": ctx.name, "inputs": sorted(ctx.inputs)}

    return step


def chapter(step: Callable[[StepContext], Awaitable[Any]]) -> Flow:
    flow = Flow("chapter")
    flow.add("director", step)
    flow.add("plot", step, after=("director",))
    flow.add("character", step, after=("plot",))
    flow.add("scene", step, after=("plot",))
    flow.add("character_notes", step, after=("character",))
    flow.add("synthesis", step, after=("character", "scene"))
    flow.add("optimize", step, after=("synthesis",))
    flow.add("quality", step, after=("synthesis",))
    return flow


async def test_independent_steps_overlap_and_a_slow_step_holds_back_only_its_dependents() -> None:
    spans: Spans = {}
    seconds = {"director": 0.05, "plot": 0.05, "character": 0.1, "scene": 0.8, "character_notes": 0.1}
    result = await run_flow(chapter(sleeper(spans, seconds)), None)

    char, scene, notes = spans["character"], spans["scene"], spans["character_notes"]
    synth = spans["synthesis"]
    assert char[0] < scene[1] and scene[0] < char[1], "character and scene must overlap"
    assert abs(char[0] - scene[0]) < 0.2, "both start when plot is done"
    # character_notes needs only character: it finishes long before the slow scene does
    assert notes[1] < scene[1] - 0.3
    # synthesis needs scene: it starts only after scene ended
    assert synth[0] >= scene[1]
    assert spans["optimize"][0] >= synth[1] and spans["quality"][0] >= synth[1]
    assert result.outputs["synthesis"] == {"step": "synthesis", "inputs": ["character", "scene"]}
    assert set(result.step_times) == set(result.outputs)


async def test_wall_time_follows_the_critical_path_not_the_serial_sum() -> None:
    spans: Spans = {}
    names = ("director", "plot", "character", "scene", "character_notes", "synthesis", "optimize", "quality")
    seconds = dict.fromkeys(names, 0.2)
    started = time.perf_counter()
    await run_flow(chapter(sleeper(spans, seconds)), None)
    wall = time.perf_counter() - started
    # critical path: director, plot, scene, synthesis, optimize = 1.0 s; serial sum: 1.6 s
    assert 0.99 <= wall < 1.4


async def test_fan_out_caps_concurrency_and_keeps_partial_failures() -> None:
    active = 0
    max_active = 0

    async def write(ctx: StepContext) -> Any:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        try:
            await asyncio.sleep(0.05)
        finally:
            active -= 1
        if ctx.run_input["fail"]:
            raise RuntimeError(f"version {ctx.run_input['n']} broke")
        return {"n": ctx.run_input["n"]}

    version = Flow("version")
    version.add("write", write)

    outcomes_seen: list[Any] = []

    async def versions(ctx: StepContext) -> Any:
        inputs = [{"n": n, "fail": n in (3, 5)} for n in range(1, 7)]
        outcomes = await ctx.fan_out(version, inputs, max_parallel=2)
        outcomes_seen.extend(outcomes)
        return [o.value.outputs["write"] if o.ok and o.value else str(o.error) for o in outcomes]

    flow = Flow("chapter")
    flow.add("versions", versions)
    sink = ListSink()
    started = time.perf_counter()
    result = await run_flow(flow, None, sink=sink)
    wall = time.perf_counter() - started

    assert max_active == 2
    assert wall >= 0.15  # 6 branches, 2 at a time, 0.05 s each
    assert [o.ok for o in outcomes_seen] == [True, True, False, True, False, True]
    failed = outcomes_seen[2].error
    assert isinstance(failed, StepFailedError) and failed.step == "versions/v3/write"
    assert "version 3 broke" in str(failed)
    assert result.outputs["versions"][0] == {"n": 1}
    assert result.outputs["versions"][5] == {"n": 6}
    started_paths = [e.step for e in sink.of("step.started")]
    assert started_paths[1:] == [f"versions/v{n}/write" for n in range(1, 7)]


async def test_fan_out_rejects_a_bad_cap() -> None:
    inner = Flow("inner")
    inner.add("a", sleeper({}, {}))

    async def fan(ctx: StepContext) -> Any:
        await ctx.fan_out(inner, [1], max_parallel=0)

    flow = Flow("f")
    flow.add("fan", fan)
    with pytest.raises(StepFailedError) as info:
        await run_flow(flow, None)
    assert isinstance(info.value.cause, FlowError)


async def test_many_roots_all_start_at_once() -> None:
    flow = Flow("wide")

    async def slow(ctx: StepContext) -> Any:
        await asyncio.sleep(0.2)
        return ctx.name

    for i in range(50):
        flow.add(f"s{i}", slow)
    started = time.perf_counter()
    result = await run_flow(flow, None)
    assert time.perf_counter() - started < 1.0  # 50 x 0.2 s serially would be 10 s
    assert result.outputs == {f"s{i}": f"s{i}" for i in range(50)}
