"""Running apps as durable jobs: the handler every app kind gets, and what a worker process shares.

A job of app A has the payload `{"input": {...}, ...}`. The worker calls the handler made here,
which validates the input against `A.input`, runs `A.flow` (or calls `A.handler`) with the job's
durable sink and checkpoints, gives every step `ctx.llm` through the process's gateway with the
job's tenant, priority, id and the step's path, writes one usage row per model call, and returns
the job's result envelope:

    {"result": <the app's result>, "text": <its plain-text answer>,
     "usage": {calls, prompt_tokens, completion_tokens, cached_tokens, total_tokens, cost_usd, ...},
     "degraded": [{"step", "reason"}, ...]}

The usage is summed from the stored rows, so calls of earlier attempts (a killed worker, a retry)
count too. Nothing here names an app: the registry says which apps exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from storyloom.agents import CallRecord, ModelChoice, RunLLM, RunServices, ToolCaller
from storyloom.app import App
from storyloom.errors import InputError
from storyloom.flow import DeltaPacing, Flow, RunResult, StepContext, run_flow
from storyloom.jobs.context import Handler, JobContext
from storyloom.jobs.maintenance import MaintenancePolicy, housekeeping_handlers, install_housekeeping
from storyloom.jobs.schedule import ensure_schedule
from storyloom.jobs.usage import job_usage
from storyloom.jobs.waits import WaitFor
from storyloom.llm.types import Usage
from storyloom.store.database import Database
from storyloom.store.schema import events
from storyloom.validation import from_validation

if TYPE_CHECKING:
    from storyloom.config import Settings
    from storyloom.jobs.models import Job
    from storyloom.jobs.queue import JobQueue
    from storyloom.llm.types import ModelClient
    from storyloom.registry import AppRegistry
    from storyloom.tools.runtime import ToolRuntime

__all__ = [
    "AppJob",
    "WorkerServices",
    "app_handlers",
    "build_services",
    "install_schedules",
    "job_payload",
    "warm_up",
]

InputT = TypeVar("InputT", bound=BaseModel)


def job_payload(app: App[Any], run_input: BaseModel | dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The payload of a job of `app` (validated now: a bad input is refused before it is queued)."""
    data = run_input.model_dump(mode="json") if isinstance(run_input, BaseModel) else run_input
    try:
        app.input.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, f"input of app {app.name!r}") from exc
    return {"input": data, **extra}


@dataclass(slots=True)
class WorkerServices:
    """Shared by every run of a worker process: one model client (and its connection pool), the
    delta pacing of all its streams, the tools, and per-app services built once on first use."""

    db: Database
    registry: AppRegistry | None = None
    settings: Settings | None = None
    client: ModelClient | None = None
    models: ModelChoice | None = None
    tools: ToolCaller | None = None  # overrides the runtime's calls (tests); else `tool_runtime` is used
    tool_runtime: ToolRuntime | None = None
    maintenance: MaintenancePolicy = field(default_factory=MaintenancePolicy)
    pacing: DeltaPacing = field(default_factory=DeltaPacing)
    step_budget_s: float | None = 45.0  # a failing model keeps one call retrying at most this long
    app_state: dict[str, Any] = field(default_factory=dict)  # per-app singletons (see AppJob.shared)

    def job_ended(self, job_id: str) -> None:
        """A run of `job_id` ended in this process (any way): drop what was kept for it."""
        forget = getattr(self.client, "forget_job", None)
        if callable(forget):
            forget(job_id)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.tool_runtime is not None:
            await self.tool_runtime.aclose()


class AppJob(Generic[InputT]):
    """What an app's handler, its `deps` factory and its job kinds receive for one job."""

    def __init__(
        self, ctx: JobContext, app: App[InputT], run_input: InputT, services: WorkerServices
    ) -> None:
        self.ctx = ctx
        self.app = app
        self.input = run_input
        self.services = services
        self.degraded: list[dict[str, str]] = []  # steps whose output is a default: [{"step","reason"}]

    # -- identity and plumbing -------------------------------------------------------------------

    @property
    def job(self) -> Job:
        return self.ctx.job

    @property
    def id(self) -> str:
        return self.ctx.job.id

    @property
    def tenant(self) -> str:
        return self.ctx.job.tenant

    @property
    def priority(self) -> int:
        return self.ctx.job.priority

    @property
    def payload(self) -> dict[str, Any]:
        return self.ctx.payload

    @property
    def queue(self) -> JobQueue:
        return self.ctx.queue

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def settings(self) -> Settings | None:
        return self.services.settings

    def emit(self, kind: str, **data: Any) -> None:
        """An app event on the job's stream (e.g. `book.progress`)."""
        self.ctx.emit(kind, **data)

    def wait_for_children(self, *, timeout_s: float | None = None) -> WaitFor:
        """`raise job.wait_for_children()`: this job waits, holding no worker slot, until every
        child has ended; then the handler runs again from the top (submit children idempotently)."""
        return self.ctx.wait_for_children(timeout_s=timeout_s)

    def wait_for_signal(self, name: str, *, timeout_s: float | None = None) -> WaitFor:
        """`raise job.wait_for_signal("choice:3")`: wait, holding no slot, for `queue.signal`."""
        return self.ctx.wait_for_signal(name, timeout_s=timeout_s)

    async def signals(self) -> dict[str, Any]:
        """Every signal this job has received: name -> latest payload."""
        return await self.ctx.signals()

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """A per-process singleton of this app (a store, a client), made on first use."""
        state = self.services.app_state
        name = f"{self.app.name}:{key}"
        if name not in state:
            state[name] = make()
        return state[name]

    # -- model calls and flows -------------------------------------------------------------------

    def llm(
        self, *, language: str = "en", budget_scope: str | None = None, budget_usd: float | None = None
    ) -> RunLLM:
        """Model access for this job: every call metered into its usage rows (and, with a
        `budget_scope`, held against that scope's lifetime cap `budget_usd` by the gateway)."""
        services = self.services
        if services.client is None or services.models is None:
            raise RuntimeError("this worker was started without a model client")
        return RunLLM(
            client=services.client,
            models=services.models,
            tenant=self.tenant,
            priority=self.priority,
            job_id=self.id,
            app=self.app.name,
            language=language,
            on_call=self._record_call,
            on_degraded=self._record_degraded,
            step_budget_s=services.step_budget_s,
            tool_specs=services.tool_runtime.registry.specs if services.tool_runtime is not None else None,
            budget_scope=budget_scope,
            budget_scope_usd=budget_usd,
        )

    def run_services(
        self, *, language: str = "en", budget_scope: str | None = None, budget_usd: float | None = None
    ) -> RunServices:
        model_access = (
            self.llm(language=language, budget_scope=budget_scope, budget_usd=budget_usd)
            if self.services.client is not None
            else None
        )
        return RunServices(model_access, self.services.tools or self._tool_caller())

    def _tool_caller(self) -> ToolCaller | None:
        """Tool calls of this job: the process's runtime with the job's tenant, priority and id;
        each call is a `tool` event of its step and a usage row (`model` = `tool:<name>`)."""
        runtime = self.services.tool_runtime
        if runtime is None:
            return None
        from storyloom.tools.steps import step_tool_caller

        def record(ctx: StepContext[Any], name: str, result: Any) -> None:
            self.ctx.record_usage(step=ctx.path, model=f"tool:{name}", usage=Usage(), cost_usd=0.0)

        return step_tool_caller(
            runtime, tenant=self.tenant, priority=self.priority, job_id=self.id, on_call=record
        )

    async def run_flow(
        self, flow: Flow, run_input: Any, *, deps: Any = None, language: str = "en"
    ) -> RunResult:
        """Run `flow` as (part of) this job: durable checkpoints and events, metered models."""
        return await run_flow(
            flow,
            run_input,
            run_id=self.id,
            deps=deps,
            sink=self.ctx.sink,
            checkpoints=self.ctx.checkpoints,
            coalesce_s=self.services.pacing,
            services=self.run_services(language=language),
        )

    def _record_call(self, record: CallRecord) -> None:
        self.ctx.record_usage(
            step=record.step, model=record.model, usage=record.usage, cost_usd=record.cost_usd
        )

    def _record_degraded(self, step: str, reason: str) -> None:
        self.degraded.append({"step": step, "reason": reason})


# Built once: a per-call `in_(...)` leaves a reference cycle in SQLAlchemy's clones for every job.
_DEGRADED_EVENTS = sa.select(events.c.step, events.c.kind, events.c.data).where(
    events.c.job_id == sa.bindparam("job_id", type_=sa.String()),
    sa.or_(events.c.kind == "step.degraded", events.c.kind == "tool"),
)


async def _degraded_before(db: Database, job_id: str) -> list[dict[str, str]]:
    """Degradations recorded in the job's events: steps of earlier attempts (they come back
    restored, not re-run), and every tool call that answered degraded (`tool <name>: <reason>`)."""
    async with db.read() as conn:
        rows = (await conn.execute(_DEGRADED_EVENTS, {"job_id": job_id})).all()
    out = []
    for step, kind, data in rows:
        data = data or {}
        if kind == "step.degraded":
            out.append({"step": str(step), "reason": str(data.get("reason", ""))})
        elif data.get("degraded"):
            out.append({"step": str(step), "reason": f"tool {data.get('tool')}: {data.get('reason')}"})
    return out


def _app_handler(app: App[Any], kind: str, custom: Callable[[AppJob[Any]], Awaitable[Any]] | None) -> Handler:
    async def handle(ctx: JobContext) -> dict[str, Any]:
        services = ctx.services
        if not isinstance(services, WorkerServices):
            raise RuntimeError("the worker was started without WorkerServices")
        raw = ctx.payload.get("input", {}) if kind == app.name else ctx.payload
        try:
            run_input = app.input.model_validate(raw) if kind == app.name else raw
        except ValidationError as exc:
            raise from_validation(exc, f"input of app {app.name!r}") from exc
        job: AppJob[Any] = AppJob(ctx, app, run_input, services)
        if custom is not None:
            result = await custom(job)
        else:
            assert app.flow is not None  # App enforces flow xor handler
            deps = app.deps(job) if app.deps is not None else None
            run = await job.run_flow(app.flow, run_input, deps=deps)
            result = app.make_result(run)
        if kind != app.name:  # an auxiliary kind returns its own JSON as is
            return result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result or {})
        return await _envelope(job, result)

    return handle


async def _envelope(job: AppJob[Any], result: Any) -> dict[str, Any]:
    text = job.app.make_text(result)
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    await job.ctx.sink.writer.flush()  # this run's usage rows and events, so the sums see them
    totals = (await job_usage(job.db, [job.id]))[job.id]
    seen = {(d["step"], d["reason"]) for d in job.degraded}
    degraded = [*job.degraded]
    for d in await _degraded_before(job.db, job.id):
        if (d["step"], d["reason"]) not in seen:
            degraded.append(d)
            seen.add((d["step"], d["reason"]))
    return {"result": data, "text": text, "usage": totals.to_dict(), "degraded": degraded}


def app_handlers(registry: AppRegistry) -> dict[str, Handler]:
    """Job kind -> handler for every app kind, plus the engine's housekeeping kinds."""
    out: dict[str, Handler] = dict(housekeeping_handlers())
    for app in registry:
        for kind, custom in app.kinds.items():
            if kind in out:
                raise InputError(f"job kind {kind!r} of app {app.name!r} is reserved by the engine")
            out[kind] = _app_handler(app, kind, custom)
    return out


def build_services(
    db: Database, settings: Settings, registry: AppRegistry, *, sim_url: str | None = None
) -> WorkerServices:
    from storyloom.llm.factory import build_client
    from storyloom.tools.setup import build_tool_runtime
    from storyloom.tools.steps import ToolSetup, app_tools

    return WorkerServices(
        db=db,
        registry=registry,
        settings=settings,
        client=build_client(settings, sim_url=sim_url),
        tool_runtime=build_tool_runtime(
            settings, app_tools(list(registry), ToolSetup(settings, sim_url)), sim_url=sim_url
        ),
        models=ModelChoice(default=settings.provider().model, overrides=dict(settings.agent_models)),
        pacing=DeltaPacing(
            max_events_per_s=settings.delta_events_per_s, max_interval_s=settings.delta_max_interval_s
        ),
        step_budget_s=settings.step_retry_budget_s,
        maintenance=MaintenancePolicy(
            events_ttl_s=settings.events_retention_days * 86_400.0,
            jobs_ttl_s=settings.jobs_retention_days * 86_400.0,
            compact_after_s=settings.compact_deltas_after_s,
        ),
    )


async def install_schedules(
    db: Database, registry: AppRegistry, policy: MaintenancePolicy | None = None
) -> None:
    """The engine's housekeeping and every app's periodic jobs, created once (kept if present)."""
    await install_housekeeping(db, policy or MaintenancePolicy())
    for app in registry:
        for schedule in app.schedules:
            kind = schedule.kind if schedule.kind == app.name else f"{app.name}.{schedule.kind}"
            await ensure_schedule(
                db, f"{app.name}:{schedule.name}", kind, dict(schedule.payload), interval_s=schedule.every_s
            )


def warm_up(registry: AppRegistry) -> None:
    """Build what the first job would otherwise build on a loop busy with hundreds of others: each
    app's flow plan (and the imports its modules did when the registry loaded them)."""
    import storyloom.llm.ledger  # noqa: F401  (the gateway imports it lazily on the first call)

    for app in registry:
        if app.flow is not None:
            app.flow.plan()
