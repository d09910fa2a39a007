"""OpenTelemetry (storyloom.tracing) with the SDK's in-memory exporter: one trace per job from the
API's submission through the queue to the worker, spans per step and per model call (GenAI
conventions), the tool-call hook, and the trace id on log lines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyloom import tracing
from storyloom.registry import AppRegistry
from support.api_server import novel_input, running_worker, serve_app

exporter_module = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


@pytest.fixture
def spans() -> Iterator[Any]:
    exporter = exporter_module.InMemorySpanExporter()
    assert tracing.configure_tracing(exporter=exporter, service_name="storyloom-test")
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def test_tracing_is_off_until_configured() -> None:
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None
    with tracing.step_span("a/b") as span:
        assert span is None
    assert tracing.configure_tracing() is False  # no endpoint, no exporter: stays off


async def test_one_trace_per_job_from_the_api_to_the_worker(tmp_path: Path, sim: Any, spans: Any) -> None:
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, registry=registry) as served, running_worker(served, registry, sim.url):
        r = await served.client.post("/api/novel/generate", json={"novel_input": novel_input()})
        assert r.status_code == 200, r.text
        job_id = r.json()["task_id"]
        first = await served.queue.events(job_id, 0, 1)
        assert first[0].data["traceparent"].startswith("00-")  # stored with the job
        deadline = time.monotonic() + 60
        while not (await served.queue.get(job_id)).status.is_terminal:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await served.queue.get(job_id)).status.value == "completed"
    finished = spans.get_finished_spans()
    submit = next(s for s in finished if s.name == "submit novel")
    job = next(s for s in finished if s.name == "job novel")
    trace_id = submit.context.trace_id
    assert job.parent is not None and job.parent.span_id == submit.context.span_id
    assert job.context.trace_id == trace_id and job.attributes["storyloom.job.id"] == job_id
    steps = [s for s in finished if s.name.startswith("step ")]
    calls = [s for s in finished if s.name.startswith("chat ")]
    assert steps and calls
    assert {s.context.trace_id for s in [*steps, *calls]} == {trace_id}  # one trace for the job
    by_id = {s.context.span_id: s for s in finished}
    for call in calls:
        attrs = call.attributes
        assert attrs["gen_ai.request.model"] == "sim-writer" and attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["gen_ai.response.finish_reasons"]
        assert by_id[call.parent.span_id].name.startswith("step ")  # each call inside its step


def test_tool_calls_and_log_lines_carry_the_trace(spans: Any) -> None:
    with tracing.job_span(job_id="j1", kind="k", tenant="t", attempt=1, worker="w", traceparent=None) as job:
        with tracing.step_span("flow/search"), tracing.tool_call("web_search", call_id="c1"):
            line = tracing.trace_ids(None, "info", {"event": "x"})
        ids = job.get_span_context()
    assert line["trace_id"] == format(ids.trace_id, "032x")
    tool = next(s for s in spans.get_finished_spans() if s.name == "execute_tool web_search")
    assert (
        tool.attributes["gen_ai.tool.name"] == "web_search" and tool.attributes["gen_ai.tool.call.id"] == "c1"
    )
    assert tool.context.trace_id == ids.trace_id
    assert "trace_id" not in tracing.trace_ids(None, "info", {"event": "outside"})  # no span, no id


async def test_the_tool_runtime_traces_each_call(spans: Any) -> None:
    from pydantic import BaseModel

    from storyloom.tools import Tool, ToolPolicy, ToolRegistry, ToolRuntime

    class Query(BaseModel):
        q: str

    async def search(args: Query) -> dict[str, str]:
        return {"answer": args.q.upper()}

    policy = ToolPolicy(timeout_s=1.0, retries=0, cache_ttl_s=60)
    runtime = ToolRuntime(ToolRegistry([Tool(name="search", input=Query, fn=search, policy=policy)]))
    try:
        with tracing.step_span("flow/research") as step:
            await runtime.call("search", {"q": "ferry"})
            await runtime.call("search", {"q": "ferry"})  # from the cache: a span all the same
    finally:
        await runtime.aclose()
    calls = [s for s in spans.get_finished_spans() if s.name == "execute_tool search"]
    assert [c.attributes["storyloom.tool.cached"] for c in calls] == [False, True]
    assert all(c.parent.span_id == step.get_span_context().span_id for c in calls)
    assert not any(c.attributes["storyloom.tool.degraded"] for c in calls)
