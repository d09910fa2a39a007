"""Steps call tools through their context in a real job: events on the stream, rows in the usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from storyloom import App, Flow, StepContext
from storyloom.config import Settings
from storyloom.jobs.models import JobStatus, StoredEvent
from storyloom.registry import AppRegistry
from storyloom.runner import job_payload
from storyloom.serve.local import run_local_job
from storyloom.tools import ToolError, ToolPolicy, ToolResult, tool


class Topic(BaseModel):
    topic: str


class Word(BaseModel):
    word: str


@tool(policy=ToolPolicy(retries=0, timeout_s=1.0))
async def always_down(args: Word) -> dict[str, str]:
    """A tool whose API is down."""
    raise ToolError("HTTP 503")


flow = Flow("researcher")


@flow.step()
async def research(ctx: StepContext) -> dict[str, Any]:
    one: ToolResult = await ctx.tool("web_search", query=ctx.run_input.topic, max_results=3)
    many = await ctx.tools(
        [("web_search", {"query": ctx.run_input.topic + " history"}), ("always_down", {"word": "x"})]
    )
    again = await ctx.tool("web_search", query=ctx.run_input.topic, max_results=3)
    return {
        "hits": len(one.output["results"]),
        "parallel": [r.to_dict() for r in many],
        "again_cached": again.cached,
    }


app = App(name="researcher", input=Topic, flow=flow, tools=[always_down])


async def test_a_step_calls_tools_in_a_job(tmp_path: Path, sim: Any) -> None:
    settings = Settings(data_dir=tmp_path, base_url=sim.url, model="sim-writer", _env_file=None)  # type: ignore[call-arg]
    registry = AppRegistry.discover(extra=[app])
    seen: list[StoredEvent] = []
    job = await run_local_job(
        settings, registry, "researcher", job_payload(app, Topic(topic="tea")), on_event=seen.append
    )
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result is not None
    result = job.result["result"]
    assert result["hits"] == 3 and result["again_cached"] is True
    search, down = result["parallel"]
    assert not search["degraded"] and search["output"]["results"]
    # The broken tool answers degraded and the job completes.
    assert down["degraded"] is True and down["reason"] == "failed: HTTP 503"
    tool_events = [e for e in seen if e.kind == "tool"]
    got = [(e.step, e.data["tool"], e.data["outcome"]) for e in tool_events]
    assert got[0] == ("research", "web_search", "ok") and got[-1] == ("research", "web_search", "cached")
    # The two parallel calls end in either order.
    assert sorted(got[1:3]) == [("research", "always_down", "degraded"), ("research", "web_search", "ok")]
    assert tool_events[0].data["arguments"] == {"query": "tea", "max_results": 3}
    # The job says so: a completed job whose answer was written without one of its tools.
    assert job.result["degraded"] == [{"step": "research", "reason": "tool always_down: failed: HTTP 503"}]
    assert job.result["usage"]["tool_calls"] == 4
    assert job.result["usage"]["calls"] == 0  # no model call: tool rows are counted apart
