"""The chapter flow: one plan, N candidate versions written in parallel, a judge picks one.

    director ─▶ versions ─▶ judge
                  │ fan-out, at most max_parallel at once, one sub-flow per version:
                  ▼
    plot ─▶ character ∥ scene ─▶ synthesis ─▶ optimize ∥ quality ─▶ revise loop ─▶ final

The director's plan is shared (the judge compares realisations of one plan); each version has its
own style hint. Policies: Character/Scene failures are skipped (synthesis goes on without them),
an Optimize failure keeps the draft, a Synthesis failure fails its version only, all versions
failing fails the chapter. The revise loop runs while score < threshold, at most K rounds; its
state carries every round's agent runs so their tokens are counted.

Every step result is JSON (checkpointed), so re-running the same run_id after a crash restores
the finished steps and only pays for the ones that were in flight.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from storyloom.errors import AllVersionsFailedError, InputError, StepFailedError, is_permanent
from storyloom.flow import CheckpointStore, DeltaPacing, EventSink, Flow, OnError, StepContext, run_flow
from storyloom.llm.types import CallMeta, ModelClient
from storyloom.novel import agents
from storyloom.novel.agents import NOT_DEGRADABLE, AgentCall, AgentModels
from storyloom.novel.judge import knockout
from storyloom.novel.length import count_length, length_score
from storyloom.novel.models import (
    AgentRun,
    ChapterRequest,
    ChapterResult,
    JudgeReport,
    TokenUsage,
    VersionResult,
)
from storyloom.novel.prompts import style_hint
from storyloom.novel.schemas import JudgeVerdict

__all__ = ["ChapterDeps", "chapter_flow", "choose_version", "version_flow", "write_chapter"]

VERSION_AGENTS = ("plot", "character", "scene", "synthesis", "optimize", "quality")


@dataclass(frozen=True, slots=True)
class ChapterDeps:
    """The services every step of a chapter run uses (the flow's `deps`)."""

    client: ModelClient
    models: AgentModels
    request: ChapterRequest
    tenant: str = "default"
    priority: int = 5


def _call(ctx: StepContext, agent: str, variant: int | None, *, stream: bool = True) -> AgentCall:
    deps: ChapterDeps = ctx.deps
    meta = CallMeta(
        tenant=deps.tenant, priority=deps.priority, job_id=ctx.run_id, step=ctx.path, variant=variant
    )
    return AgentCall(
        client=deps.client,
        model=deps.models.for_agent(agent),
        meta=meta,
        language=deps.request.input.language,
        on_delta=ctx.delta if stream else None,
        run=AgentRun(agent=agent),
    )


async def _metered(call: AgentCall, work: Awaitable[Any]) -> dict[str, Any]:
    """A step result: the agent's output and its run (tokens, time, degradation)."""
    start = time.perf_counter()
    out = await work
    call.run.elapsed_s = round(time.perf_counter() - start, 4)
    return {"out": out, "run": call.run.model_dump()}


def _out(value: Any) -> Any:
    """The output of a step result, None for a skipped step."""
    return value["out"] if isinstance(value, dict) else None


# -- one version --------------------------------------------------------------------------------


async def _plot(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "plot", v["index"])
    return await _metered(call, agents.plot(call, ctx.deps.request, v["plan"], v["hint"]))


async def _character(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "character", v["index"])
    return await _metered(call, agents.character(call, ctx.deps.request, v["plan"], _out(ctx.inputs["plot"])))


async def _scene(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "scene", v["index"])
    return await _metered(call, agents.scene(call, ctx.deps.request, v["plan"], _out(ctx.inputs["plot"])))


async def _synthesis(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "synthesis", v["index"])
    work = agents.synthesis(
        call,
        ctx.deps.request,
        plan=v["plan"],
        plot_=_out(ctx.inputs["plot"]),
        characters=_out(ctx.inputs["character"]),
        scene_=_out(ctx.inputs["scene"]),
        hint=v["hint"],
    )
    return await _metered(call, work)


async def _optimize(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "optimize", v["index"])
    return await _metered(
        call, agents.optimize(call, ctx.deps.request, _out(ctx.inputs["synthesis"]), v["hint"])
    )


def _keep_draft(ctx: StepContext) -> dict[str, Any]:
    run = AgentRun(agent="optimize", degraded="the optimizer failed; kept the draft")
    return {"out": _out(ctx.inputs["synthesis"]), "run": run.model_dump()}


async def _quality(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "quality", v["index"])
    return await _metered(call, agents.quality(call, ctx.deps.request, _out(ctx.inputs["synthesis"])))


def _loop_start(ctx: StepContext) -> dict[str, Any]:
    report = _out(ctx.inputs["quality"])
    return {
        "index": ctx.run_input["index"],
        "hint": ctx.run_input["hint"],
        "threshold": ctx.deps.request.quality_threshold,
        "text": _out(ctx.inputs["optimize"]),
        "score": report["score"],
        "issues": report["issues"],
        "summary": report["summary"],
        "stop": False,
        "runs": [],
    }


def _good_enough(state: dict[str, Any]) -> bool:
    return bool(state["stop"]) or state["score"] >= state["threshold"]


async def _revise(ctx: StepContext) -> dict[str, Any]:
    s = ctx.run_input
    call = _call(ctx, "revise", s["index"])
    return await _metered(call, agents.revise(call, ctx.deps.request, s["text"], s["issues"], s["hint"]))


async def _recheck(ctx: StepContext) -> dict[str, Any]:
    """The loop's new state: the revised text re-scored. A revise that changed nothing stops the loop."""
    s = ctx.run_input
    revised = ctx.inputs["revise"]
    runs = [*s["runs"], revised["run"]]
    if revised["out"] == s["text"]:
        return {**s, "stop": True, "runs": runs}
    call = _call(ctx, "quality", s["index"])
    checked = await _metered(call, agents.quality(call, ctx.deps.request, revised["out"]))
    report = checked["out"]
    return {
        **s,
        "text": revised["out"],
        "score": report["score"],
        "issues": report["issues"],
        "summary": report["summary"],
        "runs": [*runs, checked["run"]],
    }


async def _final(ctx: StepContext) -> dict[str, Any]:
    req: ChapterRequest = ctx.deps.request
    v = ctx.run_input
    loop = ctx.inputs["revise"]
    state = loop["state"]
    runs = [
        AgentRun.model_validate(ctx.inputs[a]["run"]) for a in VERSION_AGENTS if ctx.inputs[a] is not None
    ]
    runs += [AgentRun.model_validate(r) for r in state["runs"]]
    usage = TokenUsage()
    for r in runs:
        usage = usage.add(r.usage)
    length = count_length(state["text"], req.input.language)
    version = VersionResult(
        index=v["index"],
        style_hint=v["hint"],
        ok=True,
        text=state["text"],
        quality_score=state["score"],
        issues=state["issues"],
        summary=state["summary"],
        revise_rounds=loop["rounds"],
        length=length,
        length_score=length_score(length, req.input.length_goal),
        usage=usage,
        agents=runs,
        degraded=sorted({r.agent for r in runs if r.degraded}),
    )
    return version.model_dump(mode="json")


@functools.cache
def version_flow(max_revise_rounds: int) -> Flow:
    """One candidate version; built once per revise bound (flows are immutable once planned)."""
    body = Flow("revise-round")
    body.add("revise", _revise)
    body.add("check", _recheck, after=("revise",))

    flow = Flow("version")
    flow.add("plot", _plot)
    flow.add("character", _character, after=("plot",), on_error=OnError.SKIP)
    flow.add("scene", _scene, after=("plot",), on_error=OnError.SKIP)
    flow.add("synthesis", _synthesis, after=("plot", "character", "scene"))
    flow.add("optimize", _optimize, after=("synthesis",), on_error=OnError.FALLBACK, fallback=_keep_draft)
    flow.add("quality", _quality, after=("synthesis",))
    flow.loop(
        "revise",
        body=body,
        initial=_loop_start,
        until=_good_enough,
        max_rounds=max_revise_rounds,
        output="check",
        after=("optimize", "quality"),
    )
    flow.add("final", _final, after=(*VERSION_AGENTS, "revise"))
    return flow


# -- the chapter --------------------------------------------------------------------------------


async def _director(ctx: StepContext) -> dict[str, Any]:
    call = _call(ctx, "director", None)
    return await _metered(call, agents.director(call, ctx.deps.request))


def _failed_version(index: int, hint: str, error: BaseException | None) -> dict[str, Any]:
    cause = error.cause if isinstance(error, StepFailedError) else error
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else "unknown error"
    return VersionResult(index=index, style_hint=hint, ok=False, error=reason).model_dump(mode="json")


async def _versions(ctx: StepContext) -> list[dict[str, Any]]:
    req: ChapterRequest = ctx.deps.request
    plan = _out(ctx.inputs["director"])
    lang = req.input.language
    inputs = [{"index": i + 1, "hint": style_hint(lang, i), "plan": plan} for i in range(req.versions)]
    outcomes = await ctx.fan_out(version_flow(req.max_revise_rounds), inputs, max_parallel=req.max_parallel)
    versions: list[dict[str, Any]] = []
    permanent: list[bool] = []  # per failed version: could a re-run of the job not help?
    for v, outcome in zip(inputs, outcomes, strict=True):
        error = outcome.error
        if outcome.ok and outcome.value is not None:
            # A step the flow skipped or replaced (Character, Scene, Optimize) on a refused key or
            # a spent budget: the version is not written from defaults, it fails as it would have.
            error = next((e for e in outcome.value.errors.values() if isinstance(e, NOT_DEGRADABLE)), None)
        if not outcome.ok or outcome.value is None or error is not None:
            versions.append(_failed_version(v["index"], v["hint"], error))
            permanent.append(error is not None and is_permanent(error))
            continue
        version = dict(outcome.value.outputs["final"])
        # Steps the flow skipped or replaced: say which and why, next to the agents that ran.
        for name, exc in outcome.value.errors.items():
            run = AgentRun(agent=name, error=f"{type(exc).__name__}: {exc}").model_dump(mode="json")
            version["agents"] = [a for a in version["agents"] if a["agent"] != name] + [run]
            version["degraded"] = sorted({*version["degraded"], name})
        versions.append(version)
    if not any(v["ok"] for v in versions):
        # Every version refused for a reason no re-run can fix (a rejected key, a spent budget):
        # the worker fails the job at once instead of paying for more attempts.
        raise AllVersionsFailedError([str(v["error"]) for v in versions], permanent=all(permanent))
    return versions


async def _judge(ctx: StepContext) -> dict[str, Any]:
    req: ChapterRequest = ctx.deps.request
    plan = _out(ctx.inputs["director"])
    ok = [VersionResult.model_validate(v) for v in ctx.inputs["versions"] if v["ok"]]

    async def verdict(a: VersionResult, b: VersionResult, label: str) -> tuple[JudgeVerdict | None, AgentRun]:
        call = _call(ctx, "judge", None, stream=False)
        call.meta.step = f"{ctx.path}/{label}"
        start = time.perf_counter()
        found = await agents.judge(call, req, plan, a.text, b.text)
        call.run.elapsed_s = round(time.perf_counter() - start, 4)
        return found, call.run

    report = await knockout(ok, verdict)
    return report.model_dump(mode="json")


@functools.cache
def chapter_flow(max_revise_rounds: int = 2) -> Flow:
    flow = Flow("chapter")
    flow.add("director", _director)
    flow.add("versions", _versions, after=("director",))
    flow.add("judge", _judge, after=("director", "versions"))
    return flow


async def write_chapter(
    request: ChapterRequest,
    *,
    client: ModelClient,
    models: AgentModels,
    run_id: str,
    sink: EventSink | None = None,
    checkpoints: CheckpointStore | None = None,
    tenant: str = "default",
    priority: int = 5,
    coalesce: float | DeltaPacing = 0.05,
) -> ChapterResult:
    """Write one chapter. Safe to re-run with the same run_id: finished steps come from checkpoints.

    `coalesce`: how often streamed text becomes a `step.delta` event (seconds, or a process-wide
    `DeltaPacing`).

    Raises AllVersionsFailedError when no version could be written.
    """
    deps = ChapterDeps(client=client, models=models, request=request, tenant=tenant, priority=priority)
    start = time.perf_counter()
    try:
        result = await run_flow(
            chapter_flow(request.max_revise_rounds),
            run_id=run_id,
            deps=deps,
            sink=sink,
            checkpoints=checkpoints,
            coalesce_s=coalesce,
        )
    except StepFailedError as exc:
        if isinstance(exc.cause, AllVersionsFailedError):
            raise exc.cause from exc
        raise
    director = result.outputs["director"]
    versions = [VersionResult.model_validate(v) for v in result.outputs["versions"]]
    judge = JudgeReport.model_validate(result.outputs["judge"])
    usage = TokenUsage().add(AgentRun.model_validate(director["run"]).usage).add(judge.usage)
    for v in versions:
        usage = usage.add(v.usage)
    chosen = versions[judge.winner - 1]
    return ChapterResult(
        run_id=run_id,
        language=request.input.language,
        target_length=request.input.length_goal,
        versions=versions,
        chosen=chosen.index,
        chosen_by="judge" if judge.matches else "only",
        judge=judge,
        plan=director["out"],
        director=AgentRun.model_validate(director["run"]),
        summary=chosen.summary,
        usage=usage,
        elapsed_s=round(time.perf_counter() - start, 4),
        step_times={k: round(v, 4) for k, v in result.step_times.items()},
    )


def choose_version(result: ChapterResult, index: int) -> ChapterResult:
    """The user's override: the same result with version `index` (1-based) chosen."""
    if not 1 <= index <= len(result.versions):
        raise InputError(f"there is no version {index}: choose 1 to {len(result.versions)}.")
    version = result.versions[index - 1]
    if not version.ok:
        raise InputError(f"version {index} failed ({version.error}) and cannot be chosen.")
    return result.model_copy(update={"chosen": index, "chosen_by": "user", "summary": version.summary})
