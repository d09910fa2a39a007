"""Flow definitions: every malformed DAG is refused at definition time with a FlowError."""

from __future__ import annotations

from typing import Any

import pytest

import storyloom.flow as flow_pkg
from storyloom.errors import FlowError
from storyloom.flow import Flow, OnError, StepContext


async def noop(ctx: StepContext) -> Any:
    return None


def test_public_surface_is_exactly_the_contract() -> None:
    assert set(flow_pkg.__all__) == {
        "CheckpointStore",
        "DeltaPacing",
        "Event",
        "EventKind",
        "EventSink",
        "Flow",
        "ListSink",
        "MemoryCheckpoints",
        "NullSink",
        "OnError",
        "Outcome",
        "Prompt",
        "RunResult",
        "StepContext",
        "StepLLM",
        "StepServices",
        "run_flow",
    }
    for name in flow_pkg.__all__:
        assert getattr(flow_pkg, name) is not None


def test_decorator_names_step_after_function_and_keeps_it_callable() -> None:
    flow = Flow("f")

    @flow.step()
    async def director(ctx: StepContext) -> dict[str, Any]:
        return {}

    @flow.step("other", after=("director",))
    async def plot(ctx: StepContext) -> dict[str, Any]:
        return {}

    assert flow.step_names == ("director", "other")
    assert callable(director) and callable(plot)
    assert flow.plan().successors == ((1,), ())


def test_duplicate_name_is_refused() -> None:
    flow = Flow("f")
    flow.add("a", noop)
    with pytest.raises(FlowError, match="already has a step named 'a'"):
        flow.add("a", noop)


def test_unknown_dependency_is_refused() -> None:
    flow = Flow("f")
    with pytest.raises(FlowError, match="unknown step 'ghost'"):
        flow.add("a", noop, after=("ghost",))
    assert "a" not in flow


def test_cycles_cannot_be_built() -> None:
    flow = Flow("f")
    with pytest.raises(FlowError, match="cannot depend on itself"):
        flow.add("a", noop, after=("a",))
    flow.add("a", noop)
    flow.add("b", noop, after=("a",))
    # closing a -> b -> a would need `a` to name `b`, which did not exist when `a` was declared
    with pytest.raises(FlowError, match="already has a step"):
        flow.add("a", noop, after=("b",))


def test_bad_step_definitions_are_refused() -> None:
    flow = Flow("f")

    def sync_fn(ctx: StepContext) -> None:
        return None

    with pytest.raises(FlowError, match="async function"):
        flow.add("s", sync_fn)  # type: ignore[arg-type]
    with pytest.raises(FlowError, match="without '/'"):
        flow.add("a/b", noop)
    with pytest.raises(FlowError, match="without '/'"):
        flow.add("", noop)
    with pytest.raises(FlowError, match="needs a fallback"):
        flow.add("x", noop, on_error=OnError.FALLBACK)
    with pytest.raises(FlowError, match=r"needs on_error=OnError\.FALLBACK"):
        flow.add("x", noop, fallback=lambda ctx: 1)
    flow.add("a", noop)
    with pytest.raises(FlowError, match="twice"):
        flow.add("x", noop, after=("a", "a"))
    assert flow.step_names == ("a",)
    with pytest.raises(FlowError, match="non-empty name"):
        Flow("")


def test_loop_definitions_are_checked() -> None:
    body = Flow("body")
    body.add("check", noop)
    flow = Flow("f")
    with pytest.raises(FlowError, match="has no step 'missing'"):
        flow.loop("l", body=body, initial=lambda c: 0, until=lambda s: True, max_rounds=2, output="missing")
    with pytest.raises(FlowError, match="max_rounds"):
        flow.loop("l", body=body, initial=lambda c: 0, until=lambda s: True, max_rounds=-1, output="check")
    with pytest.raises(FlowError, match="own flow"):
        flow.loop("l", body=flow, initial=lambda c: 0, until=lambda s: True, max_rounds=1, output="check")
    flow.loop("l", body=body, initial=lambda c: 0, until=lambda s: True, max_rounds=1, output="check")
    assert "l" in flow


def test_plan_is_recompiled_after_add() -> None:
    flow = Flow("f")
    flow.add("a", noop)
    assert flow.plan().roots == (0,)
    flow.add("b", noop)
    assert flow.plan().roots == (0, 1)
