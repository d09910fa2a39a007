"""The contract between callers (agents) and whatever answers model calls.

A plain HTTP client and the gateway both implement `ModelClient`, so the novel application never
knows which one it has. Streaming is a callback rather than an async iterator: the flow engine
only needs to forward deltas to its coalescer, and a callback costs no extra task per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["CallMeta", "ChatRequest", "ChatResult", "DeltaCallback", "Message", "ModelClient", "Usage"]

Message = dict[str, str]
"""One chat message: {"role": "system" | "user" | "assistant", "content": "..."}."""

DeltaCallback = Callable[[str], None]
"""Called with each piece of streamed text, in order. Must be cheap and must not block."""


@dataclass(slots=True, kw_only=True)
class CallMeta:
    """Who is calling and how urgent it is; a plain client ignores it, the gateway schedules by it.

    priority: 0..9, higher is more urgent (a job's priority is passed through unchanged).
    """

    tenant: str = "default"
    priority: int = 5
    job_id: str | None = None
    step: str | None = None
    variant: int | None = None  # version index: keeps N versions apart in the cache
    deadline_s: float | None = None  # absolute time.monotonic() by which the call must finish
    # Absolute time.monotonic() after which no new attempt starts (a step's retry budget): a model
    # that keeps failing hands the step to its own failure policy instead of stalling it.
    retry_deadline_s: float | None = None
    # A lifetime cap of the caller's own (e.g. one book's remaining cost cap), held like a tenant
    # budget under the name `budget_scope`: a call whose worst case it cannot cover is refused.
    budget_scope: str | None = None
    budget_scope_usd: float | None = None


@dataclass(slots=True, kw_only=True)
class ChatRequest:
    """One chat completion. `json_schema` asks for JSON of that shape (response_format json_object)."""

    model: str
    messages: list[Message]
    temperature: float = 0.8
    max_tokens: int | None = None
    json_schema: dict[str, Any] | None = None
    seed: int | None = None
    stream: bool = True
    meta: CallMeta = field(default_factory=CallMeta)


@dataclass(slots=True)
class Usage:
    """Tokens of one call or a sum of calls: the one usage type of the whole package (results,
    ledger, job totals). `cached_tokens` are the prompt tokens the provider served from its prompt
    cache (billed at a fraction), part of `prompt_tokens`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )

    def __iadd__(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        return self


@dataclass(slots=True, kw_only=True)
class ChatResult:
    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    deployment: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False
    cost_usd: float = 0.0
    queue_wait_s: float = 0.0  # time the gateway held the call for admission (all attempts)


@runtime_checkable
class ModelClient(Protocol):
    """Anything that answers chat requests: the HTTP client, the gateway, a test fake."""

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        """Run one call. Raises a `storyloom.errors.ProviderError` subclass on failure."""
        ...

    async def aclose(self) -> None: ...
