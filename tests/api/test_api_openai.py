"""Every app as a chat model, tested with the official `openai` SDK against a live server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from storyloom.registry import AppRegistry
from support.api_server import Served, running_worker, serve_app

sys.path.insert(0, str(Path(__file__).parents[1] / "apps"))
from haiku_app import app as haiku


@pytest.fixture
async def live(tmp_path: Path, sim: Any) -> AsyncIterator[tuple[Served, openai.AsyncOpenAI]]:
    registry = AppRegistry.discover(extra=[haiku])
    async with serve_app(tmp_path, registry=registry) as served, running_worker(served, registry, sim.url):
        client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="not-needed-on-loopback")
        try:
            yield served, client
        finally:
            await client.close()


async def test_models_list_every_app(live: tuple[Served, openai.AsyncOpenAI]) -> None:
    _, client = live
    ids = {m.id async for m in client.models.list()}
    assert {"storyloom/haiku", "storyloom/novel"} <= ids


async def test_a_chat_completion_is_a_job_with_real_usage(
    live: tuple[Served, openai.AsyncOpenAI], sim: Any
) -> None:
    served, client = live
    before = sim.stats()["total_tokens"]
    raw = await client.chat.completions.with_raw_response.create(
        model="storyloom/haiku", messages=[{"role": "user", "content": "the sea at night"}]
    )
    completion = raw.parse()
    job_id = raw.headers["x-storyloom-job-id"]
    assert completion.id == f"chatcmpl-{job_id}" and completion.model == "storyloom/haiku"
    text = completion.choices[0].message.content
    assert text and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == sim.stats()["total_tokens"] - before > 0
    assert float(raw.headers["x-storyloom-cost-usd"]) >= 0
    job = (await served.client.get(f"/api/jobs/{job_id}")).json()
    assert job["status"] == "completed" and job["text"] == text and job["app"] == "haiku"
    assert job["usage"]["total_tokens"] == completion.usage.total_tokens


async def test_streaming_sends_progress_as_reasoning_then_the_answer(
    live: tuple[Served, openai.AsyncOpenAI], sim: Any
) -> None:
    _, client = live
    before = sim.stats()["total_tokens"]
    stream = await client.chat.completions.create(
        model="storyloom/haiku",
        messages=[{"role": "user", "content": "first snow"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content: list[str] = []
    reasoning: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta: Any = choice.delta
            if delta.content:
                content.append(delta.content)
            extra = getattr(delta, "reasoning_content", None) or (delta.model_extra or {}).get(
                "reasoning_content"
            )
            if extra:
                reasoning.append(extra)
    assert "".join(content).strip()
    assert any("draft" in line for line in reasoning)  # the agent before the answer, as thinking
    assert usage is not None and usage.total_tokens == sim.stats()["total_tokens"] - before


async def test_errors_come_in_openai_shape(live: tuple[Served, openai.AsyncOpenAI]) -> None:
    _, client = live
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(
            model="storyloom/nope", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="no user message"):
        await client.chat.completions.create(
            model="storyloom/haiku", messages=[{"role": "system", "content": "x"}]
        )
