"""A debate conversation of three user messages through the official `openai` SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai

from storyloom.registry import AppRegistry
from support.api_server import running_worker, serve_app


async def test_three_messages_through_chat_completions(tmp_path: Path, sim: Any) -> None:
    registry = AppRegistry.discover()
    async with serve_app(tmp_path, registry=registry) as served, running_worker(served, registry, sim.url):
        client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="not-needed-on-loopback")
        try:
            messages: list[Any] = []
            job_ids: list[str] = []
            for i, question in enumerate(
                ["Should cities ban cars downtown?", "What do shop owners say?", "So what do you advise?"]
            ):
                messages.append({"role": "user", "content": question})
                if i < 2:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="storyloom/debate", messages=messages
                    )
                    completion = raw.parse()
                    answer = completion.choices[0].message.content
                    assert completion.usage is not None and completion.usage.total_tokens > 0
                else:  # the last one streamed: the Reporter's tokens are the content
                    raw_stream = await client.chat.completions.with_raw_response.create(
                        model="storyloom/debate", messages=messages, stream=True
                    )
                    parts = [
                        c.choices[0].delta.content
                        async for c in raw_stream.parse()
                        if c.choices and c.choices[0].delta.content
                    ]
                    raw = raw_stream
                    answer = "".join(parts)
                assert answer and answer.strip()
                job_ids.append(raw.headers["x-storyloom-job-id"])
                messages.append({"role": "assistant", "content": answer})
        finally:
            await client.close()
        # Each message was one job whose input carried the conversation before it.
        for n, job_id in enumerate(job_ids):
            job = await served.queue.get(job_id)
            assert job.kind == "debate" and job.status.value == "completed"
            run_input = job.payload["input"]
            assert run_input["message"] == messages[2 * n]["content"]
            assert [t["content"] for t in run_input["history"]] == [m["content"] for m in messages[: 2 * n]]
            assert job.result is not None and job.result["text"] == messages[2 * n + 1]["content"]
