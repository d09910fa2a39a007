"""The debate flow (seed 003): Planner → (web search) → rounds of Critics ∥ → Host → Reporter.

    context ─ plan ─ research ─ rounds[ critic_1 ∥ critic_2 ∥ critic_3 → host ] ×1..3 ─ report ─ remember

Every box is a checkpointed step, so a worker killed mid-debate costs only the steps in flight:
the rerun restores the plan, the searches and the finished rounds and goes on from there. The
Host ends the loop early when another round would add nothing; the Reporter's text is the
streamed answer. `context` reads the conversation (the stored session, or the history the chat
front passed) and summarizes what does not fit the token budget; `remember` stores the turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storyloom.apps.debate.conversations import ConversationStore
from storyloom.apps.debate.models import (
    CRITIC_PERSONAS,
    DebateInput,
    DebateResult,
    HostVerdict,
    PlanOut,
    SearchReport,
    Turn,
)
from storyloom.apps.debate.prompts import (
    critic_prompt,
    host_prompt,
    plan_prompt,
    report_prompt,
    summary_prompt,
)
from storyloom.apps.debate.search import run_searches
from storyloom.flow import Flow, OnError, RunResult, StepContext
from storyloom.llm.tokens import estimate_tokens

__all__ = [
    "HISTORY_BUDGET_TOKENS",
    "KEEP_RECENT_TURNS",
    "DebateDeps",
    "debate_flow",
    "debate_result",
    "round_flow",
]

HISTORY_BUDGET_TOKENS = 1500  # the conversation an agent sees: summary + recent turns, at most this
KEEP_RECENT_TURNS = 4  # verbatim turns kept when the rest is summarized
_MAX_QUERIES = 3


@dataclass(frozen=True, slots=True)
class DebateDeps:
    store: ConversationStore
    tenant: str
    job_id: str


def _input(ctx: StepContext[Any]) -> DebateInput:
    value = ctx.run_input
    return value if isinstance(value, DebateInput) else DebateInput.model_validate(value)


def _deps(ctx: StepContext[Any]) -> DebateDeps | None:
    return ctx.deps if isinstance(ctx.deps, DebateDeps) else None


# -- one round: the critics in parallel, then the Host --------------------------------------------

round_flow = Flow("debate-round")


def _critic(index: int) -> Any:
    persona_name, persona = CRITIC_PERSONAS[index - 1]

    async def critic(ctx: StepContext[Any]) -> dict[str, Any]:
        state: dict[str, Any] = ctx.run_input
        if index > int(state["critics"]):
            return {"persona": persona_name, "text": None}
        host = state.get("host") or {}
        text = await ctx.llm.text(
            critic_prompt(
                persona, state["message"], state["approach"], state["key_points"],
                SearchReport.model_validate(state["search"]), str(host.get("summary") or ""),
                int(state["round"]) + 1, state["language"],
            ),
            stream=False,
        )  # fmt: skip
        return {"persona": persona_name, "text": text}

    critic.__name__ = f"critic_{index}"
    return critic


for _i in range(1, len(CRITIC_PERSONAS) + 1):
    # A critic whose model fails for good is skipped: the round goes on with the others (the Host
    # reports it as degraded), rather than the whole conversation failing for one voice.
    round_flow.add(f"critic_{_i}", _critic(_i), on_error=OnError.SKIP)


@round_flow.step(after=tuple(f"critic_{i}" for i in range(1, len(CRITIC_PERSONAS) + 1)))
async def host(ctx: StepContext[Any]) -> dict[str, Any]:
    state: dict[str, Any] = ctx.run_input
    round_no = int(state["round"]) + 1
    critiques = [str(out["text"]) for out in ctx.inputs.values() if out and out.get("text")]
    missing = [name for name, out in ctx.inputs.items() if out is None]
    if missing:
        ctx.emit("step.degraded", reason=f"{', '.join(missing)} failed; the round went on without them")
    verdict = await ctx.llm.json(
        host_prompt(state["message"], state["approach"], critiques, round_no, int(state["max_rounds"])),
        schema=HostVerdict,
        default=lambda: HostVerdict(summary="The critics' points stand as they are.", another_round=False),
    )
    return {
        **state,
        "round": round_no,
        "critiques": [*state["critiques"], *critiques],
        "host": verdict.model_dump(mode="json"),
        "done": (not verdict.another_round) or round_no >= int(state["max_rounds"]),
    }


# -- the conversation ----------------------------------------------------------------------------

debate_flow = Flow("debate")


def _tokens(summary: str, turns: list[Turn]) -> int:
    return estimate_tokens(summary) + sum(4 + estimate_tokens(t.content) for t in turns)


@debate_flow.step()
async def context(ctx: StepContext[Any]) -> dict[str, Any]:
    """The conversation so far, within the token budget: the stored (or given) turns, the older
    ones folded into a running summary that is stored so the next message starts from it."""
    inp, deps = _input(ctx), _deps(ctx)
    summary, upto = "", 0
    turns: list[Turn] = list(inp.history)
    from_store = not turns and inp.session_id is not None and deps is not None
    if from_store:
        assert deps is not None and inp.session_id is not None
        found = await deps.store.get(deps.tenant, inp.session_id, before_job=deps.job_id)
        if found is not None:
            summary, upto = found.summary, found.summarized_upto
            turns = [Turn(role="user" if t.role == "user" else "assistant", content=t.content)
                     for t in found.turns[upto:]]  # fmt: skip
    summarized = False
    if _tokens(summary, turns) > HISTORY_BUDGET_TOKENS and len(turns) > KEEP_RECENT_TURNS:
        older, turns = turns[:-KEEP_RECENT_TURNS], turns[-KEEP_RECENT_TURNS:]
        summary = await ctx.llm.text(
            summary_prompt(summary, older, HISTORY_BUDGET_TOKENS),
            stream=False,
            max_tokens=HISTORY_BUDGET_TOKENS // 2,
        )
        summarized = True
        if from_store:
            assert deps is not None and inp.session_id is not None
            await deps.store.save_summary(deps.tenant, inp.session_id, summary, upto + len(older))
    return {"summary": summary, "turns": [t.model_dump() for t in turns], "summarized": summarized}


def _queries(plan: PlanOut, inp: DebateInput) -> list[str]:
    if inp.search == "never" or (inp.search == "auto" and not plan.needs_search):
        return []
    queries = [q.strip() for q in plan.search_queries if q.strip()][:_MAX_QUERIES]
    if inp.search == "always":  # the caller wants the evidence: up to three angles on the message
        base = inp.message.strip()[:120]
        for extra in (base, f"{base} evidence", f"{base} criticism"):
            if len(queries) >= _MAX_QUERIES:
                break
            if extra not in queries:
                queries.append(extra)
    return queries


@debate_flow.step(after=("context",))
async def plan(ctx: StepContext[Any]) -> dict[str, Any]:
    inp = _input(ctx)
    window = ctx.inputs["context"]
    turns = [Turn.model_validate(t) for t in window["turns"]]
    planned = await ctx.llm.json(
        plan_prompt(inp.message, window["summary"], turns, inp.language),
        schema=PlanOut,
        default=lambda: PlanOut(approach="Answer the message directly and plainly."),
    )
    return {**planned.model_dump(mode="json"), "queries": _queries(planned, inp)}


def _no_research(ctx: StepContext[Any]) -> dict[str, Any]:
    """The searches could not run at all (no tool registry, a bug): the debate goes on without
    evidence, and says so."""
    queries = list(ctx.inputs["plan"]["queries"])
    reason = "the searches could not run"
    ctx.emit("step.degraded", reason=reason)
    return SearchReport(queries=queries, calls=0, degraded=len(queries), reasons=[reason]).model_dump(
        mode="json"
    )


@debate_flow.step(after=("plan",), on_error=OnError.FALLBACK, fallback=_no_research)
async def research(ctx: StepContext[Any]) -> dict[str, Any]:
    report = await run_searches(ctx, ctx.inputs["plan"]["queries"])
    return report.model_dump(mode="json")


def _first_state(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, planned = _input(ctx), ctx.inputs["plan"]
    return {
        "message": inp.message,
        "language": inp.language,
        "approach": planned["approach"],
        "key_points": planned["key_points"],
        "search": ctx.inputs["research"],
        "critics": inp.critics,
        "max_rounds": inp.max_rounds,
        "round": 0,
        "critiques": [],
        "host": None,
        "done": False,
    }


debate_flow.loop(
    "rounds",
    body=round_flow,
    initial=_first_state,
    until=lambda state: bool(state.get("done")),
    max_rounds=len(CRITIC_PERSONAS),
    output="host",
    after=("plan", "research"),
)


@debate_flow.step(after=("context", "rounds"))
async def report(ctx: StepContext[Any]) -> dict[str, Any]:
    inp = _input(ctx)
    window, state = ctx.inputs["context"], ctx.inputs["rounds"]["state"]
    host_verdict = HostVerdict.model_validate(state["host"] or {"summary": ""})
    text = await ctx.llm.text(
        report_prompt(
            inp.message, window["summary"], [Turn.model_validate(t) for t in window["turns"]],
            state["approach"], host_verdict.summary, host_verdict.open_questions,
            SearchReport.model_validate(state["search"]), inp.language,
        )
    )  # fmt: skip
    return {"text": text}


@debate_flow.step(after=("report",))
async def remember(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, deps = _input(ctx), _deps(ctx)
    if inp.session_id is None or deps is None:
        return {"stored": False, "session_id": inp.session_id}
    await deps.store.append_turn(
        deps.tenant, inp.session_id, deps.job_id, inp.message, ctx.inputs["report"]["text"]
    )
    return {"stored": True, "session_id": inp.session_id}


def debate_result(run: RunResult) -> DebateResult:
    state = run.outputs["rounds"]["state"]
    return DebateResult(
        text=run.outputs["report"]["text"],
        session_id=run.outputs["remember"]["session_id"],
        rounds=int(run.outputs["rounds"]["rounds"]),
        critiques=len(state["critiques"]),
        host=HostVerdict.model_validate(state["host"] or {"summary": ""}),
        search=SearchReport.model_validate(state["search"]),
        history_summarized=bool(run.outputs["context"]["summarized"]),
    )
