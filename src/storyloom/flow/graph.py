"""Declaring a flow: named async steps and the steps each one waits for.

A dependency must be declared before the step that names it. That one rule makes unknown names and
cycles impossible to build, so every mistake surfaces as a `FlowError` at definition time instead
of a run that hangs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from storyloom.errors import FlowError

if TYPE_CHECKING:
    from storyloom.flow.context import StepContext

__all__ = ["Flow", "OnError", "StepFn"]

StepFn = Callable[["StepContext"], Awaitable[Any]]
FallbackFn = Callable[["StepContext"], Any]
_F = TypeVar("_F", bound=StepFn)


class OnError(StrEnum):
    """What a step's failure does to the run."""

    FAIL = "fail"  # the run fails with StepFailedError; running siblings are cancelled
    FALLBACK = "fallback"  # the step's result is `fallback(ctx)`; dependents run with it
    SKIP = "skip"  # the step's result is None; dependents still run


@dataclass(slots=True, frozen=True)
class StepSpec:
    """One declared step. `after` holds dependency names in declaration order."""

    name: str
    fn: StepFn
    after: tuple[str, ...]
    on_error: OnError
    fallback: FallbackFn | None


@dataclass(slots=True, frozen=True)
class Plan:
    """A flow compiled to indexes so the engine's hot path does no name lookups."""

    specs: tuple[StepSpec, ...]
    names: tuple[str, ...]
    deps: tuple[tuple[int, ...], ...]
    successors: tuple[tuple[int, ...], ...]
    indegree: tuple[int, ...]
    roots: tuple[int, ...]


class Flow:
    """A DAG of async steps; a step starts as soon as the steps in its `after` are done."""

    __slots__ = ("_index", "_plan", "_specs", "name")

    def __init__(self, name: str) -> None:
        if not name:
            raise FlowError("a flow needs a non-empty name")
        self.name = name
        self._specs: list[StepSpec] = []
        self._index: dict[str, int] = {}
        self._plan: Plan | None = None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self._index)})"

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(self._index)

    def step(
        self,
        name: str | None = None,
        *,
        after: Iterable[str] = (),
        on_error: OnError = OnError.FAIL,
        fallback: FallbackFn | None = None,
    ) -> Callable[[_F], _F]:
        """Decorator form of `add`; the step is named after the function unless `name` is given."""

        def register(fn: _F) -> _F:
            step_name = name if name is not None else str(getattr(fn, "__name__", ""))
            self.add(step_name, fn, after=after, on_error=on_error, fallback=fallback)
            return fn

        return register

    def add(
        self,
        name: str,
        fn: StepFn,
        *,
        after: Iterable[str] = (),
        on_error: OnError = OnError.FAIL,
        fallback: FallbackFn | None = None,
    ) -> None:
        """Add a step. Its dependencies must already be steps of this flow."""
        deps = tuple(after)
        self._check_name(name)
        if not _is_async_callable(fn):
            raise FlowError(f"step {name!r} of flow {self.name!r}: fn must be an async function")
        for dep in deps:
            if dep == name:
                raise FlowError(f"step {name!r} of flow {self.name!r} cannot depend on itself")
            if dep not in self._index:
                raise FlowError(
                    f"step {name!r} of flow {self.name!r} depends on unknown step {dep!r} "
                    "(declare a step before the steps that depend on it)"
                )
        if len(set(deps)) != len(deps):
            raise FlowError(f"step {name!r} of flow {self.name!r} lists a dependency twice: {deps}")
        on_error = OnError(on_error)
        if on_error is OnError.FALLBACK and fallback is None:
            raise FlowError(f"step {name!r} of flow {self.name!r}: OnError.FALLBACK needs a fallback")
        if fallback is not None and on_error is not OnError.FALLBACK:
            raise FlowError(
                f"step {name!r} of flow {self.name!r}: a fallback needs on_error=OnError.FALLBACK"
            )
        self._index[name] = len(self._specs)
        self._specs.append(StepSpec(name, fn, deps, on_error, fallback))
        self._plan = None

    def loop(
        self,
        name: str,
        *,
        body: Flow,
        initial: Callable[[StepContext], Any],
        until: Callable[[Any], bool],
        max_rounds: int,
        output: str,
        after: Iterable[str] = (),
        on_error: OnError = OnError.FAIL,
        fallback: FallbackFn | None = None,
    ) -> None:
        """Add a bounded loop step: run `body` while `until(state)` is false, at most `max_rounds` times.

        Round k runs `body` as a sub-flow with prefix `r<k>` and run_input=state; the new state is
        the result of body's `output` step. The loop step's result is {"state": ..., "rounds": n}.
        """
        from storyloom.flow.loop import LoopStep

        if body is self:
            raise FlowError(f"loop {name!r} of flow {self.name!r} cannot use its own flow as body")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 0:
            raise FlowError(f"loop {name!r} of flow {self.name!r}: max_rounds must be an int >= 0")
        if output not in body:
            raise FlowError(f"loop {name!r} of flow {self.name!r}: body {body.name!r} has no step {output!r}")
        runner = LoopStep(body=body, initial=initial, until=until, max_rounds=max_rounds, output=output)
        self.add(name, runner, after=after, on_error=on_error, fallback=fallback)

    def plan(self) -> Plan:
        """The compiled form, cached until the next `add`."""
        if self._plan is None:
            self._plan = self._compile()
        return self._plan

    def _compile(self) -> Plan:
        specs = tuple(self._specs)
        deps = tuple(tuple(self._index[d] for d in s.after) for s in specs)
        successors: list[list[int]] = [[] for _ in specs]
        for i, ds in enumerate(deps):
            for d in ds:
                successors[d].append(i)
        return Plan(
            specs=specs,
            names=tuple(s.name for s in specs),
            deps=deps,
            successors=tuple(tuple(s) for s in successors),
            indegree=tuple(len(ds) for ds in deps),
            roots=tuple(i for i, ds in enumerate(deps) if not ds),
        )

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise FlowError(f"step names must be non-empty strings without '/': {name!r}")
        if name in self._index:
            raise FlowError(f"flow {self.name!r} already has a step named {name!r}")


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - objects with an async __call__ are steps too
    return call is not None and inspect.iscoroutinefunction(call)
