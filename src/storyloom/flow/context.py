"""What a step receives: `StepContext[DepsT]`, and the services a run may offer its steps.

Kept apart from the engine so that the graph, the loop step and applications can name the type
without importing the engine (and the engine without a cycle back). A context reaches the engine
only through the small `RunHandle` protocol the engine's run object implements.

Model calls and tools are *services* of a run (`StepServices`), passed to `run_flow` by whoever runs
it: the job runner wires the LLM gateway and the tool registry; a test may pass anything with the
same shape. The engine itself knows nothing about models or tools, it only hands each step the
handle its services make for it (`ctx.llm`, `ctx.tool(...)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from typing_extensions import TypeVar as DefaultTypeVar

from storyloom.errors import FlowError
from storyloom.flow.results import Outcome, RunResult

if TYPE_CHECKING:
    from storyloom.agents.tool_loop import ToolLoop
    from storyloom.flow.graph import Flow
    from storyloom.tools.base import ToolResult

__all__ = ["Prompt", "RunHandle", "StepContext", "StepLLM", "StepServices"]

DepsT = DefaultTypeVar("DepsT", default=Any)
M = TypeVar("M", bound=BaseModel)

Prompt = str | Sequence[dict[str, Any]]
"""A prompt: a user message as text, or chat messages ({"role", "content"} dicts)."""


class StepLLM(Protocol):
    """A step's access to models, always through the gateway with the run's tenant, priority, job id
    and this step's path (implemented by `storyloom.agents.LLMHandle`)."""

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
        """The answer's text; streamed text becomes this step's `step.delta` events."""
        ...

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
        """A validated `schema`, parsed defensively; degrades to `default()` (recorded) or raises."""
        ...

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
        """Function calling: the model calls `tools` (run in parallel via `ctx.tool`) for at most
        `max_rounds` rounds, then answers; a `ToolLoop` (text, rounds, calls, degraded)."""
        ...

    async def embed(
        self, texts: Sequence[str], *, model: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """One vector per text, through the gateway, metered."""
        ...


class StepServices(Protocol):
    """What a run offers its steps beyond their inputs; one per run, handed to `run_flow`."""

    def llm(self, ctx: StepContext[Any]) -> StepLLM: ...

    async def tool(self, ctx: StepContext[Any], name: str, arguments: dict[str, Any]) -> ToolResult: ...


class RunHandle(Protocol):
    """The engine's side of a context (its run object)."""

    @property
    def services(self) -> StepServices | None: ...

    def delta(self, path: str, text: str) -> None: ...

    def emit(self, path: str, kind: str, data: dict[str, Any]) -> None: ...

    async def subflow(self, flow: Flow, run_input: Any, base: str) -> RunResult: ...


class StepContext(Generic[DepsT]):
    """Everything a step may use: its inputs, the run's input and deps, models, tools, reporting.

    `deps` is whatever the runner passed to `run_flow` (an app's services); annotate a step with
    `StepContext[MyDeps]` to have it typed, as pydantic-ai's `RunContext[Deps]`.
    """

    __slots__ = ("__weakref__", "_llm", "_run", "deps", "inputs", "name", "path", "run_id", "run_input")

    # Positional on purpose: the engine makes one per step, on the hot path.
    def __init__(
        self,
        run: RunHandle,
        run_id: str,
        deps: DepsT,
        run_input: Any,
        name: str,
        path: str,
        inputs: dict[str, Any],
    ) -> None:
        self._run = run
        self._llm: StepLLM | None = None
        self.run_id = run_id
        self.deps: DepsT = deps
        self.run_input: Any = run_input
        self.name = name
        self.path = path
        self.inputs = inputs

    def __repr__(self) -> str:
        return f"StepContext(run_id={self.run_id!r}, path={self.path!r})"

    @property
    def llm(self) -> StepLLM:
        """Model calls for this step (made once per step, on first use)."""
        handle = self._llm
        if handle is None:
            services = self._run.services
            if services is None:
                raise FlowError(
                    f"step {self.path!r} asked for a model, but this run has no model access: run it as a "
                    "storyloom job (storyloom run / the API) or pass services= to run_flow"
                )
            handle = self._llm = services.llm(self)
        return handle

    async def tool(self, name: str, /, **arguments: Any) -> ToolResult:
        """Call the tool `name` under its limits (a `ToolResult`): a tool that is down, over its
        limits or failing answers `degraded=True` instead of raising; only an unknown name or
        invalid arguments raise (ToolNotFoundError, ToolArgumentsError)."""
        services = self._run.services
        if services is None:
            raise FlowError(f"step {self.path!r} called tool {name!r}, but this run has no tools")
        return await services.tool(self, name, arguments)

    async def tools(self, calls: Iterable[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Several tool calls at once (each under its own tool's limits), results in order."""
        return list(await asyncio.gather(*(self.tool(name, **arguments) for name, arguments in calls)))

    def delta(self, text: str) -> None:
        """Report streamed text; it reaches the sink coalesced as `step.delta` events."""
        self._run.delta(self.path, text)

    def emit(self, kind: str, **data: Any) -> None:
        """Emit an application event for this step, after the step's pending delta text."""
        self._run.emit(self.path, kind, data)

    async def subflow(self, flow: Flow, run_input: Any, prefix: str) -> RunResult:
        """Run `flow` inside this step; its steps' paths are `<this path>/<prefix>/<step>`.

        Raises StepFailedError when one of its FAIL steps fails; restores its finished steps from
        the root run's checkpoints.
        """
        if not prefix or "/" in prefix:
            raise FlowError(f"a sub-flow prefix must be non-empty and without '/': {prefix!r}")
        return await self._run.subflow(flow, run_input, f"{self.path}/{prefix}/")

    async def fan_out(
        self, flow: Flow, run_inputs: Iterable[Any], *, max_parallel: int, prefix: str = "v"
    ) -> list[Outcome]:
        """Run `flow` once per input, at most `max_parallel` at a time; failures are kept, not raised.

        Branch i runs with prefix f"{prefix}{i + 1}". Only `max_parallel` tasks are created: each
        takes the next branch when it finishes one, so branches start in order.
        """
        if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
            raise FlowError(f"max_parallel must be an int >= 1, got {max_parallel!r}")
        inputs = list(run_inputs)
        outcomes: list[Outcome] = [Outcome(ok=False)] * len(inputs)
        cursor = iter(range(len(inputs)))

        async def worker() -> None:
            for i in cursor:
                try:
                    value = await self.subflow(flow, inputs[i], f"{prefix}{i + 1}")
                except Exception as exc:
                    outcomes[i] = Outcome(ok=False, error=exc)
                else:
                    outcomes[i] = Outcome(ok=True, value=value)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(max_parallel, len(inputs))):
                group.create_task(worker())
        return outcomes
