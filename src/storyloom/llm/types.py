"""The contract between callers (agents) and whatever answers model calls.

A plain HTTP client and the gateway both implement `ModelClient`, so the novel application never
knows which one it has. Streaming is a callback rather than an async iterator: the flow engine
only needs to forward deltas to its coalescer, and a callback costs no extra task per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CallMeta",
    "ChatRequest",
    "ChatResult",
    "DeltaCallback",
    "EmbeddingRequest",
    "EmbeddingResult",
    "Message",
    "ModelClient",
    "ToolCall",
    "Usage",
]

Message = dict[str, Any]
"""One chat message: {"role": "system" | "user" | "assistant" | "tool", "content": "..."}; an
assistant message that called tools also has "tool_calls" (and content None), a tool's answer
has "tool_call_id" (OpenAI's wire shapes, passed through unchanged)."""

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
    # Function calling: OpenAI `tools` entries ({"type": "function", "function": {...}}) and
    # `tool_choice` ("auto" | "none" | "required" | {"type": "function", "function": {"name"}}).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
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


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call a model asked for. `arguments` is the raw JSON text the model wrote (it may
    be broken: the agent's loop repairs or reports it, never the client)."""

    id: str
    name: str
    arguments: str

    def to_wire(self) -> dict[str, Any]:
        """The entry of an assistant message's `tool_calls`, for the next request's history."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


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
    tool_calls: list[ToolCall] = field(default_factory=list)  # finish_reason "tool_calls"


@dataclass(slots=True, kw_only=True)
class EmbeddingRequest:
    """Vectors for `inputs` (OpenAI's `/v1/embeddings`; `dimensions` where the model allows it)."""

    model: str
    inputs: list[str]
    dimensions: int | None = None
    meta: CallMeta = field(default_factory=CallMeta)


@dataclass(slots=True, kw_only=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage
    model: str
    deployment: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cost_usd: float = 0.0


@runtime_checkable
class ModelClient(Protocol):
    """Anything that answers chat requests: the HTTP client, the gateway, a test fake."""

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        """Run one call. Raises a `storyloom.errors.ProviderError` subclass on failure."""
        ...

    async def aclose(self) -> None: ...
