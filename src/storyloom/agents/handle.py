"""`ctx.llm`: a step's model calls, made through the gateway with the run's identity and metered.

`RunLLM` is what every step of one run shares (the client, which model each step uses, the job's
tenant, priority and id, and where call records go); `LLMHandle` is one step's view of it, the
object `ctx.llm` returns. Apps with simple steps use `text` and `json`; agents that need the
lower-level `AgentCall` (their own prompts, retries, a variant index for N versions) get one from
`agent_call(ctx, ...)`, metered the same way.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from storyloom.agents.call import AgentCall, CallRecord, OnCall
from storyloom.agents.prose import ask_text
from storyloom.agents.run import AgentRun
from storyloom.agents.structured import JSON_MAX_TOKENS, ask_json, schema_block
from storyloom.agents.tool_loop import ToolLoop, run_tool_loop
from storyloom.errors import FlowError
from storyloom.flow.context import Prompt, StepContext
from storyloom.llm.types import CallMeta, EmbeddingRequest, EmbeddingResult, Message, ModelClient

__all__ = ["LLMHandle", "ModelChoice", "RunLLM", "agent_call", "as_messages"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Which model a step uses: an override for `<app>.<step>`, else for `<step>` (the agent's
    name, e.g. STORYLOOM_AGENT_MODELS='{"quality": "deepseek-chat"}'), else the default."""

    default: str
    overrides: Mapping[str, str] = field(default_factory=dict)

    def for_step(self, name: str, app: str | None = None) -> str:
        if app is not None:
            found = self.overrides.get(f"{app}.{name}")
            if found:
                return found
        return self.overrides.get(name) or self.default


@dataclass(slots=True, kw_only=True)
class RunLLM:
    """Shared by every step of one run. `step_budget_s`: how long one call may keep retrying a
    failing model before its step's own failure policy takes over (None: the gateway's default)."""

    client: ModelClient
    models: ModelChoice
    tenant: str = "default"
    priority: int = 5
    job_id: str | None = None
    app: str | None = None
    language: str = "en"
    on_call: OnCall | None = None
    on_degraded: Callable[[str, str], None] | None = None  # (step path, reason)
    step_budget_s: float | None = None
    # The OpenAI `tools` entries of named tools (the process's tool registry), for `with_tools`.
    tool_specs: Callable[[Sequence[str]], list[dict[str, Any]]] | None = None
    budget_scope: str | None = None  # CallMeta.budget_scope of every call (e.g. one book's cap)
    budget_scope_usd: float | None = None

    def meta(self, step: str, variant: int | None = None) -> CallMeta:
        deadline = None if self.step_budget_s is None else time.monotonic() + self.step_budget_s
        return CallMeta(
            tenant=self.tenant,
            priority=self.priority,
            job_id=self.job_id,
            step=step,
            variant=variant,
            retry_deadline_s=deadline,
            budget_scope=self.budget_scope,
            budget_scope_usd=self.budget_scope_usd,
        )


def as_messages(prompt: Prompt, system: str | None = None) -> list[Message]:
    """A prompt as chat messages, with an optional system message first."""
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in prompt]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


class LLMHandle:
    """One step's `ctx.llm` (`flow.StepLLM`); every call it makes is recorded in `run`."""

    __slots__ = ("_ctx_ref", "_shared", "run")

    def __init__(self, shared: RunLLM, ctx: StepContext[Any]) -> None:
        self._shared = shared
        # Weak: the step's context holds this handle (`ctx.llm` is made once), and a strong link
        # back made every step a reference cycle. Only the collector frees those, full collections
        # are rare on purpose (storyloom.gctune), and a busy worker kept minutes of finished jobs'
        # texts in memory.
        self._ctx_ref = weakref.ref(ctx)
        self.run = AgentRun(agent=ctx.name)

    @property
    def _ctx(self) -> StepContext[Any]:
        ctx = self._ctx_ref()
        if ctx is None:
            raise FlowError("a step's model handle was used after its step ended")
        return ctx

    def agent(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        variant: int | None = None,
        stream: bool = True,
        temperature: float = 0.8,
        step: str | None = None,
        language: str | None = None,
    ) -> AgentCall:
        """A metered `AgentCall` for agent `name` (default: the step's name) in this step."""
        shared, ctx = self._shared, self._ctx
        agent = name or ctx.name
        return AgentCall(
            client=shared.client,
            model=model or shared.models.for_step(agent, shared.app),
            meta=shared.meta(step or ctx.path, variant),
            language=language or shared.language,
            on_delta=ctx.delta if stream else None,
            run=AgentRun(agent=agent),
            temperature=temperature,
            on_call=shared.on_call,
        )

    async def text(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        stream: bool = True,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> str:
        call = self.agent(model=model, stream=stream, temperature=0.8 if temperature is None else temperature)
        try:
            return await ask_text(call, as_messages(prompt, system), max_tokens=max_tokens, stream=stream)
        finally:
            self._absorb(call.run)

    async def json(
        self,
        prompt: Prompt,
        *,
        schema: type[M],
        model: str | None = None,
        default: Callable[[], M] | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> M:
        messages = as_messages(prompt, system)
        if "```json" not in (messages[-1]["content"] or ""):
            # The schema goes last, fenced: what real models follow best, and what the simulator reads.
            last = messages[-1]
            messages[-1] = {
                **last,
                "content": f"{last['content']}\n\n{schema_block(schema, self._shared.language)}",
            }
        call = self.agent(model=model, stream=False, temperature=0.2 if temperature is None else temperature)
        try:
            return await ask_json(
                call, messages, schema, default=default, max_tokens=max_tokens or JSON_MAX_TOKENS
            )
        finally:
            self._absorb(call.run)

    async def with_tools(
        self,
        prompt: Prompt,
        *,
        tools: Sequence[str],
        max_rounds: int = 3,
        tool_choice: str | dict[str, Any] = "auto",
        model: str | None = None,
        stream: bool = True,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ToolLoop:
        """Offer `tools` to the model and run its calls (in parallel, through `ctx.tool`) until it
        answers or `max_rounds` rounds of calls are spent; the answer's text streams as deltas."""
        if self._shared.tool_specs is None:
            raise FlowError(f"step {self._ctx.path!r} offered tools, but this run has no tool registry")
        specs = self._shared.tool_specs(list(tools))
        call = self.agent(model=model, stream=stream, temperature=0.8 if temperature is None else temperature)
        try:
            return await run_tool_loop(
                self._ctx,
                call,
                as_messages(prompt, system),
                specs,
                max_rounds=max_rounds,
                tool_choice=tool_choice,
                max_tokens=max_tokens,
                stream=stream,
            )
        finally:
            self._absorb(call.run)

    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """Vectors for `texts` through the gateway (its limits and ledger), metered as one call of
        this step (model: `model`, else the `embed` agent's, e.g. STORYLOOM_AGENT_MODELS={"embed": ...})."""
        shared, ctx = self._shared, self._ctx
        embed = getattr(shared.client, "embed", None)
        if embed is None:
            raise FlowError(f"step {ctx.path!r} asked for embeddings, but the model client has none")
        chosen = model or shared.models.for_step("embed", shared.app)
        started = time.perf_counter()
        result: EmbeddingResult = await embed(
            EmbeddingRequest(
                model=chosen, inputs=list(texts), dimensions=dimensions, meta=shared.meta(ctx.path)
            )
        )
        run = self.run
        run.calls += 1
        run.usage = run.usage.add(result.usage)
        run.cost_usd += result.cost_usd
        run.model_s = round(run.model_s + time.perf_counter() - started, 4)
        if shared.on_call is not None:
            shared.on_call(
                CallRecord(ctx.path, "embed", chosen, result.deployment, result.usage, result.cost_usd)
            )
        return result.vectors

    def _absorb(self, run: AgentRun) -> None:
        """Fold one call's record into the step's, and report a degradation as it happens."""
        mine = self.run
        mine.model = run.model
        mine.calls += run.calls
        mine.usage = mine.usage.add(run.usage)
        mine.cost_usd += run.cost_usd
        mine.model_s = round(mine.model_s + run.model_s, 4)
        mine.notes.extend(run.notes)
        if run.degraded:
            mine.degraded = run.degraded
            self._ctx.emit("step.degraded", reason=run.degraded)
            if self._shared.on_degraded is not None:
                self._shared.on_degraded(self._ctx.path, run.degraded)


def agent_call(ctx: StepContext[Any], name: str | None = None, **options: Any) -> AgentCall:
    """A metered `AgentCall` for a step whose run has model access (`LLMHandle.agent`'s options)."""
    handle = ctx.llm
    if not isinstance(handle, LLMHandle):
        raise FlowError(f"step {ctx.path!r}: agent_call needs storyloom's model handle, not {type(handle)!r}")
    return handle.agent(name, **options)
