"""Running a flow: each step starts the moment its own dependencies are done.

Why hand-written on asyncio rather than a graph library: the engine's cost per step is on the hot
path of every chapter (thousands of concurrent runs per process), so it keeps to what the semantics
need: one task per extra branch (the first root runs in the caller's task, and a finishing step
runs its first newly ready successor inline in the same task), index arithmetic instead of
`asyncio.wait` over sets, one coalescing timer per run, no logging. Step results must be
JSON-compatible (they are checkpointed); this is documented, not validated, to keep the hot path
short.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from storyloom import tracing
from storyloom.errors import StepFailedError
from storyloom.flow.coalesce import DeltaCoalescer, DeltaPacing
from storyloom.flow.context import StepContext, StepServices
from storyloom.flow.graph import Flow, OnError, Plan, StepSpec
from storyloom.flow.memory import NullSink
from storyloom.flow.results import RunResult
from storyloom.flow.types import CheckpointStore, Event, EventKind, EventSink

__all__ = ["run_flow"]

_now = time.time
_clock = time.perf_counter


class _Shared:
    """What every (sub-)run of one root run shares: ids, services, sink, the loaded checkpoints."""

    __slots__ = (
        "checkpoints",
        "coalesce_s",
        "coalescer",
        "deps",
        "loop",
        "run_id",
        "saved",
        "services",
        "sink",
    )

    def __init__(
        self,
        run_id: str,
        deps: Any,
        sink: EventSink | None,
        checkpoints: CheckpointStore | None,
        coalesce_s: float | DeltaPacing,
        services: StepServices | None = None,
    ) -> None:
        self.run_id = run_id
        self.deps = deps
        self.services = services
        self.sink = sink
        self.checkpoints = checkpoints
        self.coalesce_s = coalesce_s
        self.coalescer: DeltaCoalescer | None = None  # created by the run's first delta
        self.saved: dict[str, Any] = {}
        self.loop = asyncio.get_running_loop()


class _Run:
    """One execution of a flow's plan (the root run or a sub-flow).

    Kept small on purpose: thousands are alive at once, so everything not needed by every run
    (errors, skipped, restored) is created only when first used.
    """

    __slots__ = (
        "aborting",
        "done",
        "errors",
        "host",
        "hosting",
        "left",
        "outputs",
        "paths",
        "pending",
        "plan",
        "restored",
        "run_input",
        "shared",
        "skipped",
        "step_times",
        "tasks",
    )

    def __init__(self, plan: Plan, shared: _Shared, run_input: Any, base: str) -> None:
        self.plan = plan
        self.shared = shared
        self.run_input = run_input
        self.paths = tuple(base + n for n in plan.names) if base else plan.names
        self.pending = list(plan.indegree)
        self.left = len(plan.specs)
        self.outputs: dict[str, Any] = {}
        self.step_times: dict[str, float] = {}
        self.errors: dict[str, Exception] | None = None
        self.skipped: list[str] | None = None
        self.restored: list[str] | None = None
        self.tasks: set[asyncio.Task[None]] | None = None
        self.host: asyncio.Task[Any] | None = None
        self.hosting = False
        self.aborting = False
        self.done: asyncio.Future[None] = shared.loop.create_future()

    # -- the context's view of the run (flow.context.RunHandle) --------------------------------------

    @property
    def services(self) -> StepServices | None:
        return self.shared.services

    def delta(self, path: str, text: str) -> None:
        shared = self.shared
        coalescer = shared.coalescer
        if coalescer is None:
            if shared.sink is None:
                return
            coalescer = shared.coalescer = DeltaCoalescer(shared.sink, shared.run_id, shared.coalesce_s)
        coalescer.add(path, text)

    def emit(self, path: str, kind: str, data: dict[str, Any]) -> None:
        shared = self.shared
        if shared.sink is None:
            return
        if shared.coalescer is not None:
            shared.coalescer.flush(path)
        shared.sink.emit(Event(shared.run_id, kind, path, _now(), data))

    async def subflow(self, flow: Flow, run_input: Any, base: str) -> RunResult:
        return await _Run(flow.plan(), self.shared, run_input, base).execute()

    def result(self) -> RunResult:
        return RunResult(
            self.shared.run_id,
            self.outputs,
            self.errors if self.errors is not None else {},
            self.skipped if self.skipped is not None else [],
            self.restored if self.restored is not None else [],
            self.step_times,
        )

    async def execute(self) -> RunResult:
        """Run every step; the first root runs inline in the calling task (one task fewer per run).

        Any other branch that ends the run early (a FAIL step, a step cancelled from inside)
        interrupts the caller with `Task.cancel()` and marks it `aborting`; `uncancel()` then tells
        that interruption apart from a cancellation of the caller itself, as TaskGroup does.
        """
        roots = self.plan.roots
        if not roots:
            return self.result()
        for i in roots[1:]:
            self._spawn(i)
        host = self.host = asyncio.current_task()
        self.hosting = True
        try:
            try:
                await self._chain(roots[0])
            finally:
                self.hosting = False
            await self.done
        except asyncio.CancelledError:
            if self.aborting and host is not None and host.uncancel() == 0:
                await self._cancel_tasks()
                raise self._early_end()  # noqa: B904 - keeps its own __cause__, the step's error
            await self._cancel_tasks()
            raise
        except BaseException:
            if self.aborting and host is not None:
                host.uncancel()  # a step swallowed our interruption; keep the cancel count balanced
            await self._cancel_tasks()
            raise
        return self.result()

    def _early_end(self) -> BaseException:
        """What ended the run early: the failure, or CancelledError if a step cancelled itself."""
        if self.done.cancelled():
            return asyncio.CancelledError()
        exc = self.done.exception()
        assert exc is not None
        return exc

    def _end_early(self, exc: BaseException | None) -> None:
        """Record a failure (or a cancellation when exc is None) and stop the caller's inline chain."""
        if self.done.done():
            return
        if exc is None:
            self.done.cancel()
        else:
            self.done.set_exception(exc)
        host = self.host
        if self.hosting and host is not None and asyncio.current_task() is not host:
            self.aborting = True
            host.cancel()

    def _spawn(self, i: int) -> None:
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(self.shared.loop.create_task(self._chain(i)))

    async def _cancel_tasks(self) -> None:
        done = self.done
        if done.done() and not done.cancelled():
            done.exception()  # mark retrieved: a failure that raced a cancel is not "never retrieved"
        if not self.tasks:
            return
        pending = [t for t in self.tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _chain(self, i: int) -> None:
        """Run step i, then keep running the one successor it made ready, spawning the others.

        The step's body is inlined here rather than awaited as a method: one coroutine object and
        one frame level fewer per step, which is measurable at thousands of runs.
        """
        plan = self.plan
        shared = self.shared
        outputs = self.outputs
        sink = shared.sink
        saved = shared.saved
        done = self.done
        try:
            while i >= 0 and not done.done():
                spec = plan.specs[i]
                name = spec.name
                path = self.paths[i]
                if saved and path in saved:
                    outputs[name] = saved[path]
                    if self.restored is None:
                        self.restored = []
                    self.restored.append(name)
                    if sink is not None:
                        sink.emit(Event(shared.run_id, EventKind.STEP_RESTORED, path, _now()))
                    i = self._release(i)
                    continue
                inputs = {d: outputs[d] for d in spec.after}
                ctx: StepContext[Any] = StepContext(
                    self, shared.run_id, shared.deps, self.run_input, name, path, inputs
                )
                if sink is not None:
                    sink.emit(Event(shared.run_id, EventKind.STEP_STARTED, path, _now()))
                started = _clock()
                failed = False
                try:
                    if tracing.enabled():
                        with tracing.step_span(path):
                            value = await spec.fn(ctx)
                    else:
                        value = await spec.fn(ctx)
                except Exception as exc:
                    failed = True
                    value = self._absorb(spec, ctx, exc)
                elapsed = _clock() - started
                if shared.checkpoints is not None:
                    await shared.checkpoints.save(shared.run_id, path, value)
                outputs[name] = value
                self.step_times[name] = elapsed
                if sink is not None:
                    if not failed:
                        if shared.coalescer is not None:
                            shared.coalescer.finish(path)
                        data = {"elapsed_s": elapsed}
                        sink.emit(Event(shared.run_id, EventKind.STEP_FINISHED, path, _now(), data))
                    elif spec.on_error is OnError.SKIP:
                        sink.emit(Event(shared.run_id, EventKind.STEP_SKIPPED, path, _now()))
                i = self._release(i)
        except asyncio.CancelledError:
            # A step cancelled from inside (not by us) cancels the run: never a step failure, and
            # never a run left waiting for a step that will not finish.
            self._end_early(None)
            raise
        except Exception as exc:
            self._end_early(exc)
        finally:
            if self.tasks:
                self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type]

    def _release(self, i: int) -> int:
        """Count step i as done; return the successor to run inline (-1: none), spawn the rest."""
        pending = self.pending
        inline = -1
        for j in self.plan.successors[i]:
            left = pending[j] - 1
            pending[j] = left
            if left == 0:
                if inline < 0:
                    inline = j
                else:
                    self._spawn(j)
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)
        return inline

    def _absorb(self, spec: StepSpec, ctx: StepContext, exc: Exception) -> Any:
        """Apply the step's failure policy: a value to continue with, or StepFailedError."""
        shared = self.shared
        sink = shared.sink
        if sink is not None:
            if shared.coalescer is not None:
                shared.coalescer.finish(ctx.path)
            data = {"error": f"{type(exc).__name__}: {exc}", "policy": spec.on_error.value}
            sink.emit(Event(shared.run_id, EventKind.STEP_FAILED, ctx.path, _now(), data))
        if spec.on_error is OnError.FAIL:
            raise StepFailedError(ctx.path, exc) from exc
        if self.errors is None:
            self.errors = {}
        self.errors[spec.name] = exc
        if spec.on_error is OnError.SKIP:
            if self.skipped is None:
                self.skipped = []
            self.skipped.append(spec.name)
            return None
        assert spec.fallback is not None  # Flow.add enforces it
        try:
            return spec.fallback(ctx)
        except Exception as fallback_exc:
            raise StepFailedError(ctx.path, fallback_exc) from fallback_exc


async def run_flow(
    flow: Flow,
    run_input: Any = None,
    *,
    run_id: str | None = None,
    deps: Any = None,
    sink: EventSink | None = None,
    checkpoints: CheckpointStore | None = None,
    coalesce_s: float | DeltaPacing = 0.05,
    services: StepServices | None = None,
) -> RunResult:
    """Run `flow` to the end and return every step's result.

    Checkpoints are loaded once (shared with sub-flows) and each finished step is saved before its
    dependents start, so a re-run with the same `run_id` restores finished steps and runs the rest.
    Raises StepFailedError when a FAIL step fails (running steps are cancelled first). Cancelling
    the awaiting task cancels every step, emits `run.cancelled` and re-raises CancelledError.

    Step results and `run_input` must be JSON-compatible: they are checkpointed (not validated
    here). `deps` is passed through untouched; `services` give steps `ctx.llm` and `ctx.tool`.
    Deltas are coalesced per step into one event every `coalesce_s` seconds (or as a process-wide
    `DeltaPacing` says); `coalesce_s <= 0` emits every delta as it comes. A sink's `emit` must not
    block and should not raise: an exception from it fails the run.
    """
    rid = run_id if run_id is not None else uuid.uuid4().hex
    if isinstance(sink, NullSink):
        sink = None
    shared = _Shared(rid, deps, sink, checkpoints, coalesce_s, services)
    started = _clock()
    if sink is not None:
        sink.emit(Event(rid, EventKind.RUN_STARTED, None, _now(), {"flow": flow.name}))
    try:
        if checkpoints is not None:
            shared.saved = await checkpoints.load(rid)
        result = await _Run(flow.plan(), shared, run_input, "").execute()
    except asyncio.CancelledError:
        _finish(shared, EventKind.RUN_CANCELLED, {"elapsed_s": _clock() - started})
        raise
    except BaseException as exc:
        data = {"error": f"{type(exc).__name__}: {exc}", "step": getattr(exc, "step", None)}
        _finish(shared, EventKind.RUN_FAILED, data)
        raise
    _finish(shared, EventKind.RUN_FINISHED, {"elapsed_s": _clock() - started, "status": result.status})
    return result


def _finish(shared: _Shared, kind: str, data: dict[str, Any]) -> None:
    if shared.coalescer is not None:
        shared.coalescer.close()
    if shared.sink is not None:
        shared.sink.emit(Event(shared.run_id, kind, None, _now(), data))
