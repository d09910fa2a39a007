"""`AgentCall`: one agent step's handle on the model, metering every call into its `AgentRun`.

Every model call of every app goes through one of these (built by `ctx.llm` or `agent_call`), so
tokens, cost and time are counted in one place and reported to the run's meter (`on_call`), which
the job runner turns into the job's usage rows. A cut stream is normalised here: whatever the
client called the failure, once text arrived it is a `StreamCutError` carrying that text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storyloom import tracing
from storyloom.agents.run import AgentRun
from storyloom.errors import ProviderError, StreamCutError
from storyloom.llm.tokens import estimate_tokens
from storyloom.llm.types import CallMeta, ChatRequest, ChatResult, DeltaCallback, Message, ModelClient, Usage

__all__ = ["AgentCall", "CallRecord", "OnCall"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished (or cut) model call, as the meter sees it."""

    step: str | None
    agent: str
    model: str
    deployment: str | None
    usage: Usage
    cost_usd: float
    cached: bool = False
    ok: bool = True


OnCall = Callable[[CallRecord], None]


@dataclass(slots=True)
class AgentCall:
    """One agent step's handle on the model; every call is metered into `run` and `on_call`."""

    client: ModelClient
    model: str
    meta: CallMeta
    language: str = "en"
    on_delta: DeltaCallback | None = None
    run: AgentRun = field(default_factory=lambda: AgentRun(agent=""))
    temperature: float = 0.8
    on_call: OnCall | None = None

    async def chat(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool = True,
    ) -> str:
        """The answer's text; a cut stream raises StreamCutError after its tokens are counted."""
        result = await self.complete(
            messages, json_schema=json_schema, max_tokens=max_tokens, temperature=temperature, stream=stream
        )
        return result.text

    async def complete(
        self,
        messages: list[Message],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool = True,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> ChatResult:
        """The whole result (text, tool calls, usage), metered like `chat`."""
        request = ChatRequest(
            model=self.model,
            messages=messages,
            temperature=self.temperature if temperature is None else temperature,
            max_tokens=max_tokens,
            json_schema=json_schema,
            stream=stream,
            tools=tools,
            tool_choice=tool_choice,
            meta=self.meta,
        )
        self.run.model = self.model
        self.run.calls += 1
        received: list[str] = []
        forward = self.on_delta

        def relay(text: str) -> None:
            received.append(text)
            if forward is not None:
                forward(text)

        start = time.perf_counter()
        try:
            if tracing.enabled():
                with tracing.model_call_span(self.model, agent=self.run.agent, step=self.meta.step) as span:
                    result = await self.client.chat(request, relay)
                    tracing.record_model_result(span, result)
            else:
                result = await self.client.chat(request, relay)
        except StreamCutError as exc:
            self._count_cut(exc.partial_text, exc.deployment)
            raise
        except ProviderError as exc:
            if not received:
                raise
            # The connection broke after text arrived: whatever the client called it, it is a cut
            # stream, and the text we relayed is its partial answer.
            partial = "".join(received)
            self._count_cut(partial, exc.deployment)
            raise StreamCutError(
                f"stream broke after {len(partial)} characters: {exc}", partial_text=partial
            ) from exc
        finally:
            self.run.model_s = round(self.run.model_s + time.perf_counter() - start, 4)
        self._count(result)
        return result

    def _count(self, result: ChatResult) -> None:
        run = self.run
        run.usage = run.usage.add(result.usage)
        run.cost_usd += result.cost_usd
        if self.on_call is not None:
            self.on_call(
                CallRecord(
                    self.meta.step,
                    run.agent,
                    self.model,
                    result.deployment,
                    result.usage,
                    result.cost_usd,
                    result.cached,
                )
            )

    def _count_cut(self, partial: str, deployment: str | None) -> None:
        """A cut stream was paid for: count its output tokens (estimated; no usage came)."""
        usage = Usage(completion_tokens=estimate_tokens(partial))
        self.run.usage = self.run.usage.add(usage)
        if self.on_call is not None:
            self.on_call(
                CallRecord(self.meta.step, self.run.agent, self.model, deployment, usage, 0.0, ok=False)
            )
