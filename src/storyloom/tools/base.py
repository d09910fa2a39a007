"""What a tool is: a name, a pydantic input model, an async implementation and its policy.

A tool is an external capability with its own quota and failure modes (a search API, a web page,
an MCP server's function). The policy says how it is protected: how many calls may run at once
and per minute (shared by every process through the limit backends of the LLM gateway), how long
one call may take, how often a transient failure is retried, how long an answer is cached, when
the breaker opens, and what to answer when the tool cannot: a *degraded* answer, which is not an
error (seed 003's tool executor returns `{"degraded": true}` and the conversation goes on).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from storyloom.errors import ConfigError, InputError, NotFoundError, StoryloomError
from storyloom.limits.breaker import BreakerPolicy

__all__ = [
    "DegradedFactory",
    "Tool",
    "ToolArgumentsError",
    "ToolCallMeta",
    "ToolError",
    "ToolImpl",
    "ToolNotFoundError",
    "ToolPolicy",
    "ToolResult",
    "tool_breaker",
]

In = TypeVar("In", bound=BaseModel)


def tool_breaker(
    *,
    failure_rate: float = 0.5,
    minimum_calls: int = 5,
    window_s: float = 60.0,
    open_s: float = 10.0,
    max_open_s: float = 60.0,
) -> BreakerPolicy:
    """The breaker of a tool: the gateway's rules with one half-open probe and no ramp (a tool has
    no concurrency worth ramping back to, and one probe is all a search API needs to be judged)."""
    return BreakerPolicy(
        failure_rate=failure_rate,
        minimum_calls=minimum_calls,
        window_s=window_s,
        open_s=open_s,
        max_open_s=max_open_s,
        half_open_calls=1,
        ramp_s=0.0,
    )


DegradedFactory = Callable[[BaseModel, str], Any]
"""(the call's validated input, why it degraded) -> the JSON-able answer used instead."""


def _default_degraded(args: BaseModel, reason: str) -> Any:
    return {
        "degraded": True,
        "message": "the tool is unavailable right now; answer without it",
        "reason": reason,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolPolicy:
    """How one tool is protected. `None` limits mean unlimited.

    `max_wait_s` bounds the wait for a slot (concurrency or rate): past it the call degrades
    rather than stalling the conversation. `cache_ttl_s` 0 turns the cache off; seed 003 caches
    search for 600 s. `retries` counts extra attempts after a transient failure (timeout, 5xx,
    429, connection error); each attempt takes its own slot, since each is a call on the API."""

    max_concurrency: int | None = None
    calls_per_minute: int | None = None
    timeout_s: float = 10.0
    retries: int = 1
    backoff_s: float = 0.2
    cache_ttl_s: float = 0.0
    max_wait_s: float = 5.0
    breaker: BreakerPolicy = field(default_factory=tool_breaker)
    degraded: DegradedFactory = _default_degraded
    window_s: float = 60.0  # the rate's window (60 s; a scaled-down bench may use less)
    # Share of calls_per_minute that may go out at once (the token bucket's capacity); the rest is
    # spread over the window, so no 60 s window ever holds more than calls_per_minute.
    burst: float = 0.2

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "calls_per_minute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"tool policy {name} must be an integer >= 1 or None, got {value!r}")
        if not 0 < self.burst <= 1:
            raise ConfigError(f"tool policy burst must be in (0, 1], got {self.burst!r}")
        if self.timeout_s <= 0 or self.max_wait_s < 0 or self.cache_ttl_s < 0 or self.retries < 0:
            raise ConfigError("tool policy timeout_s must be > 0; max_wait_s, cache_ttl_s, retries >= 0")

    def with_overrides(self, overrides: Mapping[str, Any]) -> ToolPolicy:
        """A copy with some fields replaced (settings: STORYLOOM_TOOL_POLICIES)."""
        import dataclasses

        known = {f.name for f in dataclasses.fields(self)} - {"breaker", "degraded"}
        unknown = sorted(set(overrides) - known - {"breaker"})
        if unknown:
            raise ConfigError(f"unknown tool policy field(s) {unknown}: use {sorted(known | {'breaker'})}")
        changes = {k: v for k, v in overrides.items() if k != "breaker"}
        if "breaker" in overrides:
            changes["breaker"] = dataclasses.replace(self.breaker, **dict(overrides["breaker"]))
        return dataclasses.replace(self, **changes)


ToolImpl = Callable[[Any], Awaitable[Any]]
"""The implementation: gets the validated input model, returns JSON-able output. Raises
`ToolError` (transient or not), `TimeoutError`, or an aiohttp error for a failed call."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool(Generic[In]):
    """One tool. `description` and the input model's JSON schema are what a model is offered."""

    name: str
    input: type[In]
    fn: Callable[[In], Awaitable[Any]]
    description: str = ""
    policy: ToolPolicy = field(default_factory=ToolPolicy)
    schema: dict[str, Any] | None = None  # the parameters offered to models, when not the input's (MCP)

    def __post_init__(self) -> None:
        import re

        # OpenAI's rule for function names, so every tool can be offered to a model.
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise ConfigError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if not (isinstance(self.input, type) and issubclass(self.input, BaseModel)):
            raise ConfigError(f"tool {self.name!r}: input= must be a pydantic model class")

    def parameters(self) -> dict[str, Any]:
        """The input's JSON schema as function-calling `parameters` (no titles: less prompt)."""
        if self.schema is not None:
            return dict(self.schema)
        return dict(_input_schema(self.input))

    def spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry: {"type": "function", "function": {name, description, parameters}}."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters()},
        }

    def parse(self, arguments: Mapping[str, Any]) -> In:
        from pydantic import ValidationError

        try:
            return self.input.model_validate(dict(arguments))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolArgumentsError(f"tool {self.name!r} got invalid arguments: {problems}") from exc


@dataclass(slots=True, kw_only=True)
class ToolResult:
    """The answer of one tool call. `degraded` answers are the policy's stand-in (breaker open,
    limit wait past the deadline, failed for good), with `reason` saying which; they are not
    errors. `cached` answers came from the TTL cache (or, degraded and cached, from a stale one)."""

    tool: str
    output: Any
    degraded: bool = False
    cached: bool = False
    reason: str | None = None
    elapsed_s: float = 0.0
    attempts: int = 0
    wait_s: float = 0.0  # time spent waiting for a slot under the tool's limits

    @property
    def outcome(self) -> str:
        """ok / cached / degraded / failed, as the metrics count it."""
        if self.degraded:
            return "degraded"
        return "cached" if self.cached else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "output": self.output,
            "degraded": self.degraded,
            "cached": self.cached,
            "reason": self.reason,
            "elapsed_s": round(self.elapsed_s, 4),
        }


@dataclass(slots=True, kw_only=True)
class ToolCallMeta:
    """Who calls and how urgently: the same identity model calls carry (`llm.CallMeta`)."""

    tenant: str = "default"
    priority: int = 5
    job_id: str | None = None
    step: str | None = None
    deadline_s: float | None = None  # absolute time.monotonic(): the call must end by then


class ToolError(StoryloomError):
    """A tool call failed. `transient` errors are retried (and count for the breaker); others are
    the tool's own refusal of this input and count for nothing. `retry_after_s` from a 429."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = True,
        status: int | None = None,
        retry_after_s: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.retry_after_s = retry_after_s
        self.rate_limited = rate_limited


class ToolArgumentsError(InputError):
    """The arguments do not fit the tool's input model (a model's broken call, or a step's bug)."""


class ToolNotFoundError(NotFoundError):
    """No tool of that name is registered."""


@functools.cache
def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Built once per input model: pydantic builds it anew on every call (about a millisecond a
    tool, on every model call that offers tools)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in (schema.get("properties") or {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return schema
