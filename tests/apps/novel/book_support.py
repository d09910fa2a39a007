"""Helpers of the book tests: model access over loopback HTTP to the simulator, and a router that
sends chosen prompts to a faulty simulated model (the provider boundary, nothing mocked)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storyloom.agents import ModelChoice, RunLLM, RunServices
from storyloom.llm.client import HttpModelClient
from storyloom.llm.types import ChatRequest, ChatResult, DeltaCallback, ModelClient
from storyloom.registry import AppRegistry
from storyloom.store import Database


@dataclass
class Router:
    """Sends a request to `model` instead of its own when `rule(prompt text)` names one."""

    inner: ModelClient
    rule: Callable[[str], str | None]
    routed: list[str] = field(default_factory=list)

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        text = "\n".join(m.get("content", "") for m in request.messages)
        target = self.rule(text)
        if target is not None:
            self.routed.append(target)
            request = ChatRequest(
                model=target,
                messages=request.messages,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                json_schema=request.json_schema,
                stream=request.stream,
                meta=request.meta,
            )
        return await self.inner.chat(request, on_delta)

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_client(sim: Any) -> HttpModelClient:
    return HttpModelClient(sim.url, None, connect_timeout_s=5, ttft_timeout_s=30, total_timeout_s=60)


def services(client: ModelClient, run_id: str = "r") -> RunServices:
    return RunServices(
        RunLLM(client=client, models=ModelChoice(default="sim-writer"), app="novel", job_id=run_id)
    )


async def database(tmp_path: Path) -> Database:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'book.db'}")
    await db.migrate(AppRegistry.discover().migrations())
    return db
