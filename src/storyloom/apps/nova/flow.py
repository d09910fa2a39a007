"""The Nova flow (seed 001): a supervisor plans, the sub-agents it picks run in parallel (each
searching the web and the platforms), then a headline and a writer that streams the post.

    supervise ─┬ profile ─┬ headline ─ write
               ├ insight ─┤
               ├ facts ───┤
               └ hitpoint ┘

Degradation as the seed says: a model that fails is retried and then replaced by the gateway's
fallback model; if every model is down the writer still answers, with a post made of the team's
notes that says plainly it is a stand-in (`degraded`); a search that is down answers from cache or
degraded, and the post is written anyway.
"""

from __future__ import annotations

import re
from typing import Any

from storyloom.apps.nova.models import (
    AGENTS,
    AgentNotes,
    AgentTask,
    Headline,
    NovaInput,
    NovaResult,
    SearchUse,
    SupervisorPlan,
)
from storyloom.apps.nova.prompts import agent_prompt, headline_prompt, supervisor_prompt, writer_prompt
from storyloom.apps.nova.search import agent_search
from storyloom.flow import Flow, OnError, RunResult, StepContext

__all__ = ["nova_flow", "nova_result"]

nova_flow = Flow("nova")
_TAG = re.compile(r"[#＃\s]+")


def _input(ctx: StepContext[Any]) -> NovaInput:
    value = ctx.run_input
    return value if isinstance(value, NovaInput) else NovaInput.model_validate(value)


@nova_flow.step()
async def supervise(ctx: StepContext[Any]) -> dict[str, Any]:
    inp = _input(ctx)
    plan = await ctx.llm.json(
        supervisor_prompt(inp.request, inp.audience, inp.language),
        schema=SupervisorPlan,
        default=lambda: SupervisorPlan(angle=inp.request[:200]),
    )
    chosen = set(plan.agents)
    tasks = {a: AgentTask(run=a in chosen, query=str(getattr(plan, f"{a}_query"))) for a in AGENTS}
    if inp.agents is not None:  # the caller's choice wins over the supervisor's
        tasks = {a: AgentTask(run=a in inp.agents, query=t.query) for a, t in tasks.items()}
    if not any(t.run for t in tasks.values()):
        tasks["facts"] = AgentTask(run=True, query=tasks["facts"].query)  # a post needs something true
    return {
        "angle": plan.angle,
        "tasks": {a: {"run": t.run, "query": (t.query or inp.request)[:200]} for a, t in tasks.items()},
    }


def _agent(agent: str) -> Any:
    async def run(ctx: StepContext[Any]) -> dict[str, Any]:
        inp, plan = _input(ctx), ctx.inputs["supervise"]
        task = plan["tasks"][agent]
        if not task["run"]:
            return {"ran": False}
        use = await agent_search(ctx, agent, task["query"])
        notes = await ctx.llm.json(
            agent_prompt(agent, inp.request, plan["angle"], use.findings, use.degraded, inp.language),
            schema=AgentNotes,
            default=lambda: AgentNotes(summary="; ".join(use.findings[:2]), points=use.findings[:4]),
        )
        return {"ran": True, **notes.model_dump(mode="json"), "search": use.model_dump(mode="json")}

    run.__name__ = agent
    return run


for _agent_name in AGENTS:
    nova_flow.add(_agent_name, _agent(_agent_name), after=("supervise",))


def _notes(ctx: StepContext[Any]) -> dict[str, dict[str, Any]]:
    return {a: ctx.inputs[a] for a in AGENTS if (ctx.inputs.get(a) or {}).get("ran")}


@nova_flow.step(after=("supervise", *AGENTS))
async def headline(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, angle = _input(ctx), ctx.inputs["supervise"]["angle"]
    notes = {a: str(n.get("summary") or "") for a, n in _notes(ctx).items()}
    found = await ctx.llm.json(
        headline_prompt(inp.request, angle, notes, inp.language),
        schema=Headline,
        default=lambda: Headline(title=inp.request[:20], tags=[]),
    )
    tags = [t for t in (_TAG.sub("", tag) for tag in found.tags) if t][:8]
    return {"title": found.title.strip() or inp.request[:20], "tags": tags}


def _stand_in_post(ctx: StepContext[Any]) -> dict[str, Any]:
    """Every model is down: the team's notes as the post, saying plainly that it is a stand-in."""
    inp = _input(ctx)
    notes = _notes(ctx)
    points = [p for n in notes.values() for p in n.get("points") or []][:8]
    head = (
        "（内容生成服务暂时不可用，以下是整理好的要点）"
        if inp.language == "zh"
        else ("(The writing service is unavailable right now; here are the team's notes.)")
    )
    body = "\n".join([head, *(f"• {p}" for p in points)]) if points else head
    tags = ctx.inputs["headline"]["tags"]
    # The streamed answer goes on after the title, as the written body would have.
    ctx.delta(body + ("\n\n" + " ".join(f"#{t}" for t in tags) if tags else ""))
    ctx.emit("step.degraded", reason="the writer's models are down: the post is the team's notes")
    return {"body": body, "stand_in": True}


@nova_flow.step(after=("supervise", "headline", *AGENTS), on_error=OnError.FALLBACK, fallback=_stand_in_post)
async def write(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, angle, head = _input(ctx), ctx.inputs["supervise"]["angle"], ctx.inputs["headline"]
    points = {a: list(n.get("points") or []) for a, n in _notes(ctx).items()}
    ctx.delta(f"{head['title']}\n\n")  # the streamed answer is the whole post: title, body, tags
    body = await ctx.llm.text(writer_prompt(inp.request, angle, head["title"], points, inp.language))
    if head["tags"]:
        ctx.delta("\n\n" + " ".join(f"#{t}" for t in head["tags"]))
    return {"body": body.strip(), "stand_in": False}


def nova_result(run: RunResult) -> NovaResult:
    head, written = run.outputs["headline"], run.outputs["write"]
    use = SearchUse()
    ran: list[str] = []
    for agent in AGENTS:
        out = run.outputs.get(agent) or {}
        if not out.get("ran"):
            continue
        ran.append(agent)
        one = SearchUse.model_validate(out.get("search") or {})
        use.calls += one.calls
        use.cached += one.cached
        use.degraded += one.degraded
        use.reasons.extend(one.reasons)
    tags = list(head["tags"])
    text = "\n\n".join(p for p in (head["title"], written["body"], " ".join(f"#{t}" for t in tags)) if p)
    return NovaResult(
        title=head["title"],
        body=written["body"],
        tags=tags,
        text=text,
        agents_run=ran,
        search=use,
        degraded=bool(use.degraded or written.get("stand_in")),
    )
