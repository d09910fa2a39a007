"""The debate app (seed 003): Planner → Critics (in parallel) → Host, 1–3 rounds, → Reporter.

A conversation is a session id: each user message is one job that reads the conversation's
history (summarized to a token budget when long), debates, streams the Reporter's answer and
stores the turn. As a chat model (`storyloom/debate`) the history comes in as the messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from storyloom.app import App, AppTables, Schedule
from storyloom.apps.debate.models import DebateInput, DebateResult, HostVerdict, PlanOut, SearchReport, Turn

__all__ = ["DebateInput", "DebateResult", "HostVerdict", "PlanOut", "SearchReport", "Turn", "app"]

_IDLE_DAYS = 30


def _from_messages(messages: Sequence[Mapping[str, Any]]) -> DebateInput:
    """The last user message is the message; the user and assistant turns before it the history."""
    from storyloom.errors import InputError

    def text(m: Mapping[str, Any]) -> str:
        content = m.get("content")
        if isinstance(content, list):
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        return str(content or "")

    turns = [(str(m.get("role")), text(m)) for m in messages if m.get("role") in ("user", "assistant")]
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise InputError("the conversation must end with a non-empty user message to answer.")
    history = [Turn(role="user" if r == "user" else "assistant", content=c[-40_000:]) for r, c in turns[:-1]]
    return DebateInput(message=turns[-1][1][:8000], history=history[-200:])


def _deps(job: Any) -> Any:
    from storyloom.apps.debate.conversations import ConversationStore
    from storyloom.apps.debate.flow import DebateDeps

    store = job.shared("conversations", lambda: ConversationStore(job.db))
    return DebateDeps(store=store, tenant=job.tenant, job_id=job.id)


async def _cleanup(job: Any) -> dict[str, Any]:
    import time

    from storyloom.apps.debate.conversations import ConversationStore

    days = float(job.payload.get("idle_days", _IDLE_DAYS))
    removed = await ConversationStore(job.db).delete_older_than(time.time() - days * 86400)
    return {"removed": removed}


def _routes() -> Any:
    from storyloom.apps.debate.routes import router

    return router


def _result(run: Any) -> DebateResult:
    from storyloom.apps.debate.flow import debate_result

    return debate_result(run)


def _flow() -> Any:
    from storyloom.apps.debate.flow import debate_flow

    return debate_flow


app: App[DebateInput] = App(
    name="debate",
    title="Debate",
    description=(
        "Planner, critics in parallel and a Host over 1-3 rounds, then a Reporter; multi-turn by session id."
    ),
    input=DebateInput,
    flow=_flow(),
    deps=_deps,
    result=_result,
    answer_step="report",
    from_messages=_from_messages,
    routes=_routes,
    tables=AppTables(migrations=Path(__file__).with_name("migrations")),
    schedules=[Schedule(name="cleanup", kind="cleanup", every_s=6 * 3600, payload={"idle_days": _IDLE_DAYS})],
    jobs={"cleanup": _cleanup},
)
