"""Function calling over real loopback HTTP: the simulator's wire format (raw, no SDK), the client's
parse of streamed tool-call deltas, and the agent loop in a job (broken arguments, degraded tools)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel

from storyloom import App, Flow, StepContext
from storyloom.agents import parse_arguments
from storyloom.config import Settings
from storyloom.jobs.models import JobStatus, StoredEvent
from storyloom.llm.client import HttpModelClient
from storyloom.llm.types import ChatRequest
from storyloom.registry import AppRegistry
from storyloom.runner import job_payload
from storyloom.serve.local import run_local_job
from storyloom.tools import SearchInput, ToolError, ToolPolicy, tool

SEARCH = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web",
        "parameters": SearchInput.model_json_schema(),
    },
}


async def _raw(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/chat/completions", json=body) as r:
        return r.status, await r.read()


async def test_the_simulator_speaks_openais_tool_call_wire_format(sim: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "green tea"}], "tools": [SEARCH]}
    status, raw = await _raw(sim.url, body)
    assert status == 200
    doc = json.loads(raw)
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "web_search"
    assert json.loads(call["function"]["arguments"])["query"] == "green tea"
    assert doc["usage"]["completion_tokens"] > 0

    # Streamed: the first delta of a call has index, id, type, name and "" arguments; then pieces.
    status, raw = await _raw(sim.url, {**body, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(line[5:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["id"] == call["id"] and calls[0]["function"]["arguments"] == ""
    assert all(set(c) == {"index", "function"} for c in calls[1:]) and len(calls) > 2
    assert "".join(c["function"]["arguments"] for c in calls) == call["function"]["arguments"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and raw.rstrip().endswith(b"data: [DONE]")

    # Once a tool answered, the model answers with text; tool_choice "none" never calls.
    answered = [
        *body["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"results": []}'},
    ]
    status, raw = await _raw(sim.url, {**body, "messages": answered})
    after = json.loads(raw)["choices"][0]
    assert after["finish_reason"] == "stop" and after["message"]["content"]
    status, raw = await _raw(sim.url, {**body, "tool_choice": "none"})
    assert json.loads(raw)["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_the_client_returns_tool_calls_streamed_or_not(sim: Any, stream: bool) -> None:
    client = HttpModelClient(sim.url, None)
    try:
        result = await client.chat(
            ChatRequest(
                model="m",
                messages=[{"role": "user", "content": "web_search for oolong. tool calls: 3"}],
                tools=[SEARCH],
                tool_choice="required",
                stream=stream,
            )
        )
    finally:
        await client.aclose()
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert [c.name for c in result.tool_calls] == ["web_search"] * 3
    assert len({c.id for c in result.tool_calls}) == 3
    queries = [json.loads(c.arguments)["query"] for c in result.tool_calls]
    assert queries[0] == "web_search for oolong" and len(set(queries)) == 3


def test_broken_arguments_are_repaired_or_reported() -> None:
    assert parse_arguments('{"query": "tea"}') == ({"query": "tea"}, False, None)
    assert parse_arguments('{"query": "te') == ({"query": "te"}, True, None)
    value, _, problem = parse_arguments("{")
    assert value is None and problem is not None and "not valid JSON" in problem
    assert parse_arguments("[1]")[2] == "the arguments must be a JSON object"


class Question(BaseModel):
    question: str


class Word(BaseModel):
    word: str


@tool(policy=ToolPolicy(retries=0))
async def dictionary(args: Word) -> dict[str, str]:
    """Look a word up; its service is down."""
    raise ToolError("HTTP 503")


flow = Flow("asker")


@flow.step()
async def answer(ctx: StepContext) -> dict[str, Any]:
    prompt = f"{ctx.run_input.question}\nUse web search and the dictionary. tool calls: 2"
    loop = await ctx.llm.with_tools(prompt, tools=["web_search", "dictionary"], max_rounds=2)
    return {"text": loop.text, **loop.to_dict()}


app = App(name="asker", input=Question, flow=flow, tools=[dictionary])


@pytest.mark.parametrize("broken", [0.0, 1.0])
async def test_the_agent_loop_runs_tool_calls_in_a_job(tmp_path: Path, sim: Any, broken: float) -> None:
    sim.configure(faults={"broken_tool_args": broken})
    settings = Settings(data_dir=tmp_path, base_url=sim.url, model="sim-writer", _env_file=None)  # type: ignore[call-arg]
    seen: list[StoredEvent] = []
    job = await run_local_job(
        settings,
        AppRegistry.discover(extra=[app]),
        "asker",
        job_payload(app, Question(question="what is pu-erh")),
        on_event=seen.append,
    )
    sim.configure(faults={"broken_tool_args": 0.0})
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result is not None
    result = job.result["result"]
    assert result["text"].strip() and result["rounds"] == 1
    calls = result["calls"]
    assert sorted(c["tool"] for c in calls) == ["dictionary", "web_search"]
    by_tool = {c["tool"]: c for c in calls}
    # The search answered; the dictionary is down: degraded, and the answer is still written.
    assert result["degraded"] is True
    if broken:
        # One call's arguments were cut short: repaired, or reported back to the model.
        assert any(c.get("repaired") or c.get("error") for c in calls)
    else:
        assert by_tool["web_search"]["degraded"] is False and by_tool["dictionary"]["degraded"] is True
    usage = job.result["usage"]
    assert usage["calls"] == 2  # the call that asked for tools, and the one that answered
    assert usage["tool_calls"] == sum(1 for c in calls if "error" not in c)
    assert sum(1 for e in seen if e.kind == "tool") == usage["tool_calls"]
    assert any(e.kind == "step.delta" for e in seen)  # the answer streamed


async def test_the_openai_sdk_reads_the_simulators_tool_calls(sim: Any) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=sim.url, api_key="sim")
    try:
        messages: Any = [{"role": "user", "content": "web search for matcha"}]
        plain = await client.chat.completions.create(model="m", messages=messages, tools=[SEARCH])  # type: ignore[list-item]
        (call,) = plain.choices[0].message.tool_calls or []
        assert call.function.name == "web_search" and json.loads(call.function.arguments)["query"]
        stream = await client.chat.completions.create(
            model="m", messages=messages, tools=[SEARCH], stream=True
        )  # type: ignore[list-item]
        pieces = [c async for c in stream]
    finally:
        await client.close()
    deltas = [c.choices[0].delta for c in pieces if c.choices]
    first = next(d.tool_calls[0] for d in deltas if d.tool_calls)
    assert first.id == call.id and first.function is not None and first.function.name == "web_search"
    args = "".join(
        (d.tool_calls[0].function.arguments or "")
        for d in deltas
        if d.tool_calls and d.tool_calls[0].function
    )
    assert args == call.function.arguments
    assert [c.choices[0].finish_reason for c in pieces if c.choices][-1] == "tool_calls"
