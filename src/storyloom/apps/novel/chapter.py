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

from storyloom.agents import (
    NOT_DEGRADABLE,
    AgentCall,
    AgentRun,
    ModelChoice,
    OnCall,
    RunLLM,
    RunServices,
    agent_call,
)
from storyloom.apps.novel import agents, continuity
from storyloom.apps.novel.judge import knockout
from storyloom.apps.novel.length import count_length, fit_length, length_score
from storyloom.apps.novel.models import ChapterRequest, ChapterResult, Degradation, JudgeReport, VersionResult
from storyloom.apps.novel.prompts import style_hint
from storyloom.apps.novel.quality import measure
from storyloom.apps.novel.schemas import JudgeVerdict
from storyloom.errors import AllVersionsFailedError, InputError, StepFailedError, is_permanent
from storyloom.flow import CheckpointStore, DeltaPacing, EventSink, Flow, OnError, StepContext, run_flow
from storyloom.llm.types import ModelClient, Usage

__all__ = ["ChapterDeps", "chapter_flow", "choose_version", "run_chapter", "version_flow", "write_chapter"]

VERSION_AGENTS = ("plot", "character", "scene", "synthesis", "optimize", "quality")


@dataclass(frozen=True, slots=True)
class ChapterDeps:
    """What every step of a chapter run reads (the flow's `deps`); models come from `ctx.llm`."""

    request: ChapterRequest


def _call(
    ctx: StepContext[ChapterDeps], agent: str, variant: int | None, *, stream: bool = True
) -> AgentCall:
    return agent_call(
        ctx,
        agent,
        variant=variant,
        stream=stream,
        temperature=agents.temperature(agent),
        language=ctx.deps.request.input.language,
    )


async def _metered(ctx: StepContext[Any], call: AgentCall, work: Awaitable[Any]) -> dict[str, Any]:
    """A step result: the agent's output and its run (tokens, cost, time, degradation). A degraded
    output is also an event, so a live view says "degraded: why" instead of "done"."""
    start = time.perf_counter()
    out = await work
    call.run.elapsed_s = round(time.perf_counter() - start, 4)
    if call.run.degraded:
        ctx.emit("step.degraded", agent=call.run.agent, reason=call.run.degraded)
    return {"out": out, "run": call.run.model_dump(mode="json")}


def _out(value: Any) -> Any:
    """The output of a step result, None for a skipped step."""
    return value["out"] if isinstance(value, dict) else None


# -- one version --------------------------------------------------------------------------------


async def _plot(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "plot", v["index"])
    return await _metered(ctx, call, agents.plot(call, ctx.deps.request, v["plan"], v["hint"]))


async def _character(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "character", v["index"])
    return await _metered(
        ctx, call, agents.character(call, ctx.deps.request, v["plan"], _out(ctx.inputs["plot"]))
    )


async def _scene(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "scene", v["index"])
    return await _metered(
        ctx, call, agents.scene(call, ctx.deps.request, v["plan"], _out(ctx.inputs["plot"]))
    )


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
    return await _metered(ctx, call, work)


async def _optimize(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "optimize", v["index"])
    return await _metered(
        ctx,
        call,
        agents.optimize(call, ctx.deps.request, _out(ctx.inputs["synthesis"]), v["hint"], v["plan"]),
    )


def _keep_draft(ctx: StepContext) -> dict[str, Any]:
    run = AgentRun(agent="optimize", degraded="the optimizer failed; kept the draft")
    return {"out": _out(ctx.inputs["synthesis"]), "run": run.model_dump(mode="json")}


async def _quality(ctx: StepContext) -> dict[str, Any]:
    v = ctx.run_input
    call = _call(ctx, "quality", v["index"])
    checked = await _metered(
        ctx, call, agents.quality(call, ctx.deps.request, _out(ctx.inputs["synthesis"]), v["plan"])
    )
    return await _with_continuity(ctx, checked, _out(ctx.inputs["synthesis"]), v["index"], v["plan"])


async def _with_continuity(
    ctx: StepContext[ChapterDeps], checked: dict[str, Any], text: str, index: int, plan: Any
) -> dict[str, Any]:
    """The quality report plus continuity issues (rules, then the agent), when memory is given:
    they join the issues the revise loop fixes, and stop the loop from ending while they stand."""
    req = ctx.deps.request
    if req.continuity is None:
        return checked
    call = _call(ctx, "continuity", index, stream=False)
    found = await continuity.check(call, req, text, plan)
    lang = req.input.language
    report = dict(checked["out"])
    report["issues"] = [*report["issues"], *(i.as_issue(lang) for i in found)]
    report["continuity"] = [i.model_dump(mode="json") for i in found]
    return {"out": report, "run": checked["run"], "continuity_run": call.run.model_dump(mode="json")}


def _loop_start(ctx: StepContext) -> dict[str, Any]:
    report = _out(ctx.inputs["quality"])
    return {
        "index": ctx.run_input["index"],
        "hint": ctx.run_input["hint"],
        "plan": ctx.run_input["plan"],
        "continuity": report.get("continuity", []),
        "threshold": ctx.deps.request.quality_threshold,
        "text": _out(ctx.inputs["optimize"]),
        "score": report["score"],
        "issues": report["issues"],
        "summary": report["summary"],
        "stop": False,
        "runs": [],
    }


def _good_enough(state: dict[str, Any]) -> bool:
    return bool(state["stop"]) or (state["score"] >= state["threshold"] and not state.get("continuity"))


async def _revise(ctx: StepContext) -> dict[str, Any]:
    s = ctx.run_input
    call = _call(ctx, "revise", s["index"])
    work = agents.revise(call, ctx.deps.request, s["text"], s["issues"], s["hint"], s.get("plan"))
    return await _metered(ctx, call, work)


async def _recheck(ctx: StepContext) -> dict[str, Any]:
    """The loop's new state: the revised text re-scored. A revise that changed nothing stops the loop."""
    s = ctx.run_input
    revised = ctx.inputs["revise"]
    runs = [*s["runs"], revised["run"]]
    if revised["out"] == s["text"]:
        return {**s, "stop": True, "runs": runs}
    call = _call(ctx, "quality", s["index"])
    checked = await _metered(ctx, call, agents.quality(call, ctx.deps.request, revised["out"], s.get("plan")))
    checked = await _with_continuity(ctx, checked, revised["out"], s["index"], s.get("plan"))
    report = checked["out"]
    extra = [checked["continuity_run"]] if "continuity_run" in checked else []
    return {
        **s,
        "text": revised["out"],
        "score": report["score"],
        "issues": report["issues"],
        "summary": report["summary"],
        "continuity": report.get("continuity", []),
        "runs": [*runs, checked["run"], *extra],
    }


async def _fit(ctx: StepContext) -> dict[str, Any]:
    """Length control: continue a short text, trim a long one at a sentence end (never mid-sentence)."""
    req: ChapterRequest = ctx.deps.request
    state = ctx.inputs["revise"]["state"]
    if not req.fit_length:
        return {"text": state["text"], "action": None, "run": None}
    call = _call(ctx, "continue", state["index"])
    fitted = await fit_length(call, req, state["text"], state.get("plan"))
    return {
        "text": fitted.text,
        "action": fitted.action,
        "run": call.run.model_dump(mode="json") if call.run.calls else None,
    }


async def _final(ctx: StepContext) -> dict[str, Any]:
    req: ChapterRequest = ctx.deps.request
    v = ctx.run_input
    loop = ctx.inputs["revise"]
    state = loop["state"]
    fit = ctx.inputs["fit"]
    runs = [
        AgentRun.model_validate(ctx.inputs[a]["run"]) for a in VERSION_AGENTS if ctx.inputs[a] is not None
    ]
    first_check = ctx.inputs["quality"]
    if isinstance(first_check, dict) and "continuity_run" in first_check:
        runs.append(AgentRun.model_validate(first_check["continuity_run"]))
    runs += [AgentRun.model_validate(r) for r in state["runs"]]
    if fit["run"] is not None:
        runs.append(AgentRun.model_validate(fit["run"]))
    text = fit["text"]
    usage = Usage()
    for r in runs:
        usage = usage.add(r.usage)
    length = count_length(text, req.input.language)
    # The score is a judgement only if the last quality check that set it answered for real.
    checks = [r for r in runs if r.agent == "quality"]
    measured = bool(checks) and checks[-1].degraded is None
    version = VersionResult(
        index=v["index"],
        style_hint=v["hint"],
        ok=True,
        text=text,
        quality_score=state["score"],
        quality_measured=measured,
        issues=state["issues"],
        summary=state["summary"],
        revise_rounds=loop["rounds"],
        length=length,
        length_score=length_score(length, req.input.length_goal),
        length_adherence=round(length / req.input.length_goal, 4),
        length_fit=fit["action"],
        continuity=state.get("continuity", []),
        measures=measure(
            text,
            target=req.input.length_goal,
            language=req.input.language,
            continuity_issues=len(state.get("continuity", [])),
            judge={"quality_score": state["score"]},
        ).model_dump(mode="json"),
        usage=usage,
        cost_usd=round(sum(r.cost_usd for r in runs), 8),
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
    flow.add("fit", _fit, after=("revise",))
    flow.add("final", _final, after=(*VERSION_AGENTS, "revise", "fit"))
    return flow


# -- the chapter --------------------------------------------------------------------------------


async def _director(ctx: StepContext) -> dict[str, Any]:
    call = _call(ctx, "director", None)
    return await _metered(ctx, call, agents.director(call, ctx.deps.request))


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
        call = agent_call(
            ctx,
            "judge",
            stream=False,
            temperature=agents.temperature("judge"),
            step=f"{ctx.path}/{label}",
            language=req.input.language,
        )
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
    models: ModelChoice,
    run_id: str,
    sink: EventSink | None = None,
    checkpoints: CheckpointStore | None = None,
    tenant: str = "default",
    priority: int = 5,
    coalesce: float | DeltaPacing = 0.05,
    on_call: OnCall | None = None,
) -> ChapterResult:
    """Write one chapter outside the job service (CLI, benchmarks, tests); `on_call` sees every
    model call. Safe to re-run with the same run_id: finished steps come from checkpoints.

    Raises AllVersionsFailedError when no version could be written.
    """
    shared = RunLLM(
        client=client,
        models=models,
        tenant=tenant,
        priority=priority,
        job_id=run_id,
        app="novel",
        language=request.input.language,
        on_call=on_call,
    )
    return await run_chapter(
        request,
        run_id=run_id,
        services=RunServices(shared),
        sink=sink,
        checkpoints=checkpoints,
        coalesce=coalesce,
    )


async def run_chapter(
    request: ChapterRequest,
    *,
    run_id: str,
    services: RunServices,
    sink: EventSink | None = None,
    checkpoints: CheckpointStore | None = None,
    coalesce: float | DeltaPacing = 0.05,
) -> ChapterResult:
    """Write one chapter with the given run services (the job runner's are metered into the job).

    `coalesce`: how often streamed text becomes a `step.delta` event (seconds, or a process-wide
    `DeltaPacing`).
    """
    start = time.perf_counter()
    try:
        result = await run_flow(
            chapter_flow(request.max_revise_rounds),
            run_id=run_id,
            deps=ChapterDeps(request),
            sink=sink,
            checkpoints=checkpoints,
            coalesce_s=coalesce,
            services=services,
        )
    except StepFailedError as exc:
        if isinstance(exc.cause, AllVersionsFailedError):
            raise exc.cause from exc
        raise
    return _chapter_result(request, run_id, result.outputs, result.step_times, time.perf_counter() - start)


def _chapter_result(
    request: ChapterRequest,
    run_id: str,
    outputs: dict[str, Any],
    step_times: dict[str, float],
    elapsed: float,
) -> ChapterResult:
    director_run = AgentRun.model_validate(outputs["director"]["run"])
    versions = [VersionResult.model_validate(v) for v in outputs["versions"]]
    judge = JudgeReport.model_validate(outputs["judge"])
    usage = director_run.usage.add(judge.usage)
    cost = director_run.cost_usd + judge.cost_usd
    for v in versions:
        usage = usage.add(v.usage)
        cost += v.cost_usd
    chosen = versions[judge.winner - 1]
    decided = "judge" if judge.decided else "tie-break"
    chosen_by = decided if judge.matches else "only"
    return ChapterResult(
        run_id=run_id,
        language=request.input.language,
        target_length=request.input.length_goal,
        versions=versions,
        chosen=chosen.index,
        chosen_by=chosen_by,
        judge=judge,
        plan=outputs["director"]["out"],
        director=director_run,
        summary=chosen.summary,
        previous_summary=request.previous_summary,
        usage=usage,
        cost_usd=round(cost, 8),
        cache_hit_share=round(usage.cached_tokens / usage.prompt_tokens, 4) if usage.prompt_tokens else 0.0,
        degraded=_degradations(director_run, versions, judge),
        elapsed_s=round(elapsed, 4),
        step_times={k: round(v, 4) for k, v in step_times.items()},
    )


def _degradations(director: AgentRun, versions: list[VersionResult], judge: JudgeReport) -> list[Degradation]:
    """Every agent whose output is not the model's own, in one list for chapter.json and the CLI."""
    out: list[Degradation] = []
    if director.degraded:
        out.append(Degradation(agent="director", reason=director.degraded))
    for v in versions:
        if not v.ok:
            out.append(Degradation(agent="version", version=v.index, reason=v.error or "failed"))
            continue
        for run in v.agents:
            reason = run.degraded or run.error
            if reason:
                out.append(Degradation(agent=run.agent, version=v.index, reason=reason))
        if not v.quality_measured:
            out.append(
                Degradation(agent="quality", version=v.index, reason="quality not measured (default score)")
            )
    if judge.degraded:
        out.append(Degradation(agent="judge", reason=judge.degraded))
    return out


def choose_version(result: ChapterResult, index: int) -> ChapterResult:
    """The user's override: the same result with version `index` (1-based) chosen."""
    if not 1 <= index <= len(result.versions):
        raise InputError(f"there is no version {index}: choose 1 to {len(result.versions)}.")
    version = result.versions[index - 1]
    if not version.ok:
        raise InputError(f"version {index} failed ({version.error}) and cannot be chosen.")
    return result.model_copy(update={"chosen": index, "chosen_by": "user", "summary": version.summary})
