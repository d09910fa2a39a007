"""Failure policies (fail, fallback, skip) and bounded loops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storyloom.errors import StepFailedError
from storyloom.flow import EventKind, Flow, ListSink, MemoryCheckpoints, OnError, StepContext, run_flow


async def draft(ctx: StepContext) -> Any:
    return {"text": "draft"}


async def broken(ctx: StepContext) -> Any:
    raise ValueError("model answered prose")


async def test_fail_policy_fails_the_run_and_cancels_siblings() -> None:
    sibling_cancelled = asyncio.Event()
    dependent_ran = False

    async def slow(ctx: StepContext) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    async def dependent(ctx: StepContext) -> Any:
        nonlocal dependent_ran
        dependent_ran = True

    async def broken_later(ctx: StepContext) -> Any:
        await asyncio.sleep(0.05)  # the sibling is running by now
        await broken(ctx)

    flow = Flow("f")
    flow.add("root", draft)
    flow.add("bad", broken_later, after=("root",))
    flow.add("slow", slow, after=("root",))
    flow.add("after_bad", dependent, after=("bad",))
    sink = ListSink()
    with pytest.raises(StepFailedError) as info:
        async with asyncio.timeout(5):
            await run_flow(flow, None, sink=sink)
    assert info.value.step == "bad"
    assert isinstance(info.value.cause, ValueError)
    assert sibling_cancelled.is_set()
    assert not dependent_ran
    failed = sink.of(EventKind.STEP_FAILED)
    assert [(e.step, e.data["policy"]) for e in failed] == [("bad", "fail")]
    assert "ValueError: model answered prose" in failed[0].data["error"]
    assert sink.events[-1].kind == EventKind.RUN_FAILED
    assert sink.events[-1].data["step"] == "bad"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_fallback_policy_continues_with_a_value_computed_from_the_context() -> None:
    flow = Flow("f")
    flow.add("synthesis", draft)
    flow.add(
        "optimize",
        broken,
        after=("synthesis",),
        on_error=OnError.FALLBACK,
        fallback=lambda ctx: ctx.inputs["synthesis"],
    )
    seen: list[Any] = []

    async def final(ctx: StepContext) -> Any:
        seen.append(ctx.inputs["optimize"])
        return "done"

    flow.add("final", final, after=("optimize",))
    sink = ListSink()
    result = await run_flow(flow, None, sink=sink)
    assert result.outputs["optimize"] == {"text": "draft"}
    assert seen == [{"text": "draft"}]
    assert isinstance(result.errors["optimize"], ValueError)
    assert result.status == "degraded"
    assert result.skipped == []
    assert sink.kinds("optimize") == [EventKind.STEP_STARTED, EventKind.STEP_FAILED]
    assert sink.of(EventKind.STEP_FAILED)[0].data["policy"] == "fallback"


async def test_a_failing_fallback_fails_the_run() -> None:
    def bad_fallback(ctx: StepContext) -> Any:
        raise KeyError("no draft")

    flow = Flow("f")
    flow.add("optimize", broken, on_error=OnError.FALLBACK, fallback=bad_fallback)
    with pytest.raises(StepFailedError) as info:
        await run_flow(flow, None)
    assert isinstance(info.value.cause, KeyError)


async def test_skip_policy_gives_none_and_dependents_still_run() -> None:
    flow = Flow("f")
    flow.add("plot", draft)
    flow.add("character", broken, after=("plot",), on_error=OnError.SKIP)

    async def synthesis(ctx: StepContext) -> Any:
        return {"character": ctx.inputs["character"], "plot": ctx.inputs["plot"]}

    flow.add("synthesis", synthesis, after=("plot", "character"))
    sink = ListSink()
    result = await run_flow(flow, None, sink=sink)
    assert result.outputs["character"] is None
    assert result.outputs["synthesis"] == {"character": None, "plot": {"text": "draft"}}
    assert result.skipped == ["character"]
    assert result.status == "degraded"
    assert sink.kinds("character") == [EventKind.STEP_STARTED, EventKind.STEP_FAILED, EventKind.STEP_SKIPPED]
    assert sink.events[-1].kind == EventKind.RUN_FINISHED
    assert sink.events[-1].data["status"] == "degraded"


async def test_cancelled_error_inside_a_step_is_not_a_failure() -> None:
    fallback_calls = 0

    def fallback(ctx: StepContext) -> Any:
        nonlocal fallback_calls
        fallback_calls += 1
        return None

    async def cancelled(ctx: StepContext) -> Any:
        raise asyncio.CancelledError

    flow = Flow("f")
    flow.add("x", cancelled, on_error=OnError.FALLBACK, fallback=fallback)
    sink = ListSink()
    with pytest.raises(asyncio.CancelledError):
        await run_flow(flow, None, sink=sink)
    assert fallback_calls == 0
    assert EventKind.STEP_FAILED not in sink.kinds()
    assert sink.events[-1].kind == EventKind.RUN_CANCELLED


def revise_body(calls: list[Any], step: int) -> Flow:
    async def revise(ctx: StepContext) -> Any:
        calls.append(ctx.run_input)
        return {"text": ctx.run_input["text"] + "+", "score": ctx.run_input["score"]}

    async def check(ctx: StepContext) -> Any:
        return {"text": ctx.inputs["revise"]["text"], "score": ctx.inputs["revise"]["score"] + step}

    body = Flow("revise-round")
    body.add("revise", revise)
    body.add("check", check, after=("revise",))
    return body


def looped(body: Flow, start_score: int, max_rounds: int) -> Flow:
    flow = Flow("f")

    async def quality(ctx: StepContext) -> Any:
        return {"text": "d", "score": start_score}

    flow.add("quality", quality)
    flow.loop(
        "revise",
        body=body,
        after=("quality",),
        initial=lambda ctx: ctx.inputs["quality"],
        until=lambda state: state["score"] >= 70,
        max_rounds=max_rounds,
        output="check",
    )
    return flow


async def test_loop_stops_at_the_threshold() -> None:
    calls: list[Any] = []
    checkpoints = MemoryCheckpoints()
    result = await run_flow(looped(revise_body(calls, 20), 40, 5), None, run_id="r", checkpoints=checkpoints)
    assert result.outputs["revise"] == {"state": {"text": "d++", "score": 80}, "rounds": 2}
    assert [c["score"] for c in calls] == [40, 60]
    assert {"revise/r1/revise", "revise/r1/check", "revise/r2/check"} <= set(checkpoints.runs["r"])
    assert "revise/r3/check" not in checkpoints.runs["r"]


async def test_loop_stops_after_max_rounds() -> None:
    calls: list[Any] = []
    result = await run_flow(looped(revise_body(calls, 1), 10, 2), None)
    assert result.outputs["revise"] == {"state": {"text": "d++", "score": 12}, "rounds": 2}
    assert len(calls) == 2


async def test_loop_runs_no_round_when_already_good() -> None:
    calls: list[Any] = []
    result = await run_flow(looped(revise_body(calls, 20), 90, 2), None)
    assert result.outputs["revise"] == {"state": {"text": "d", "score": 90}, "rounds": 0}
    assert calls == []


async def test_loop_keeps_the_last_state_when_the_round_output_is_skipped() -> None:
    body = Flow("round")
    body.add("check", broken, on_error=OnError.SKIP)
    result = await run_flow(looped(body, 10, 3), None)
    assert result.outputs["revise"] == {"state": {"text": "d", "score": 10}, "rounds": 1}


async def test_a_failure_in_another_branch_interrupts_the_callers_inline_step() -> None:
    """The first ready step runs inline in the caller's task; a sibling's failure must still stop it."""
    inline_cancelled = asyncio.Event()

    async def slow(ctx: StepContext) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            inline_cancelled.set()
            raise

    async def broken_later(ctx: StepContext) -> Any:
        await asyncio.sleep(0.05)
        await broken(ctx)

    flow = Flow("f")
    flow.add("root", draft)
    flow.add("slow", slow, after=("root",))  # first successor: runs inline in the caller's task
    flow.add("bad", broken_later, after=("root",))
    with pytest.raises(StepFailedError) as info:
        async with asyncio.timeout(5):
            await run_flow(flow, None)
    assert info.value.step == "bad"
    assert inline_cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our interruption was undone
    assert asyncio.all_tasks() == {task}


async def test_a_step_that_swallows_the_interruption_still_ends_the_run() -> None:
    after_ran = False

    async def stubborn(ctx: StepContext) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "ignored the cancel"

    async def after(ctx: StepContext) -> Any:
        nonlocal after_ran
        after_ran = True

    async def broken_later(ctx: StepContext) -> Any:
        await asyncio.sleep(0.05)
        await broken(ctx)

    flow = Flow("f")
    flow.add("root", draft)
    flow.add("stubborn", stubborn, after=("root",))
    flow.add("bad", broken_later, after=("root",))
    flow.add("after", after, after=("stubborn",))
    with pytest.raises(StepFailedError):
        await run_flow(flow, None)
    assert not after_ran
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_step_cancelled_from_inside_in_another_branch_cancels_the_run() -> None:
    async def slow(ctx: StepContext) -> Any:
        await asyncio.sleep(10)

    async def cancels_itself(ctx: StepContext) -> Any:
        await asyncio.sleep(0.05)
        raise asyncio.CancelledError

    flow = Flow("f")
    flow.add("root", draft)
    flow.add("slow", slow, after=("root",))
    flow.add("cancels", cancels_itself, after=("root",))
    sink = ListSink()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await run_flow(flow, None, sink=sink)
    assert sink.events[-1].kind == EventKind.RUN_CANCELLED
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_an_outside_cancel_wins_over_a_concurrent_failure() -> None:
    async def slow(ctx: StepContext) -> Any:
        await asyncio.sleep(10)

    async def broken_later(ctx: StepContext) -> Any:
        await asyncio.sleep(0.05)
        await broken(ctx)

    flow = Flow("f")
    flow.add("slow", slow)
    flow.add("bad", broken_later)
    task = asyncio.create_task(run_flow(flow, None))
    await asyncio.sleep(0.05)
    task.cancel()  # lands around the time `bad` fails: either way the caller sees a cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_the_failure_keeps_the_steps_exception_as_its_cause() -> None:
    async def slow(ctx: StepContext) -> Any:
        await asyncio.sleep(10)

    async def broken_later(ctx: StepContext) -> Any:
        await asyncio.sleep(0.02)
        await broken(ctx)

    flow = Flow("f")
    flow.add("slow", slow)  # inline in the caller's task, so the failure arrives by interruption
    flow.add("bad", broken_later)
    with pytest.raises(StepFailedError) as info:
        await run_flow(flow, None)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.cause is info.value.__cause__


async def test_a_failing_fan_out_branch_inside_a_failing_run_nests_paths() -> None:
    inner = Flow("inner")
    inner.add("write", broken)

    async def one(ctx: StepContext) -> Any:
        return await ctx.subflow(inner, None, "v1")

    flow = Flow("f")
    flow.add("versions", one)
    with pytest.raises(StepFailedError) as info:
        await run_flow(flow, None)
    assert info.value.step == "versions"
    assert isinstance(info.value.cause, StepFailedError)
    assert info.value.cause.step == "versions/v1/write"
