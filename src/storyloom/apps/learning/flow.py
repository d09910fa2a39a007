"""The learning chat (seed 004's immediate path): recall → answer (streamed) → follow_up.

`follow_up` enqueues the background tasks the seed's `/chat` ran as FastAPI BackgroundTasks:
memory consolidation and conversation analysis, now durable jobs with retries, at a lower
priority than answers, keyed by this job so a rerun enqueues them once. Enqueueing is one insert;
the answer has already streamed and does not wait for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storyloom.apps.learning.models import ConversationTask, LearningInput, Turn
from storyloom.apps.learning.store import LearningStore
from storyloom.flow import Flow, StepContext

if TYPE_CHECKING:
    from storyloom.jobs.queue import JobQueue

__all__ = ["BACKGROUND_PRIORITY", "LearningDeps", "analyze_flow", "chat_flow", "consolidate_flow"]

BACKGROUND_PRIORITY = 3  # below chat answers (5): a busy queue answers learners first


@dataclass(frozen=True, slots=True)
class LearningDeps:
    store: LearningStore
    queue: JobQueue
    tenant: str
    job_id: str


def _input(ctx: StepContext[Any]) -> LearningInput:
    value = ctx.run_input
    return value if isinstance(value, LearningInput) else LearningInput.model_validate(value)


chat_flow = Flow("learning")


@chat_flow.step()
async def recall(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, deps = _input(ctx), ctx.deps
    if not isinstance(deps, LearningDeps):
        return {"memories": []}
    return {"memories": await deps.store.recent_summaries(deps.tenant, inp.session_id)}


@chat_flow.step(after=("recall",))
async def answer(ctx: StepContext[Any]) -> dict[str, Any]:
    inp = _input(ctx)
    memories = "\n".join(f"- {m}" for m in ctx.inputs["recall"]["memories"]) or "- (nothing yet)"
    turns = "\n".join(f"{t.role}: {t.content}" for t in inp.history[-10:]) or "(none)"
    text = await ctx.llm.text(
        "You are a Feynman-method tutor: ask the learner to explain the idea simply, find the gap in "
        "the explanation, and answer with one clear explanation and one follow-up question.\n\n"
        f"Topic: {inp.topic or '(open)'}\nWhat you remember about this learner:\n{memories}\n\n"
        f"Recent turns:\n{turns}\n\nLearner: {inp.message}"
    )
    return {"text": text}


@chat_flow.step(after=("answer",))
async def follow_up(ctx: StepContext[Any]) -> dict[str, Any]:
    inp, deps = _input(ctx), ctx.deps
    if not inp.background or not isinstance(deps, LearningDeps):
        return {"background": {}}
    conversation = [*inp.history, Turn(role="user", content=inp.message)]
    conversation.append(Turn(role="assistant", content=ctx.inputs["answer"]["text"][:20_000]))
    task = ConversationTask(
        session_id=inp.session_id, topic=inp.topic, conversation=conversation[-200:], source_job=deps.job_id
    ).model_dump(mode="json")
    ids: dict[str, str] = {}
    for kind in ("consolidate", "analyze"):
        job = await deps.queue.submit(
            f"learning.{kind}",
            task,
            priority=BACKGROUND_PRIORITY,
            idempotency_key=f"learning:{deps.job_id}:{kind}",
            tenant=deps.tenant,
            parent_id=deps.job_id,
        )
        ids[kind] = job.id
    return {"background": ids}


def _conversation(ctx: StepContext[Any]) -> str:
    task = ConversationTask.model_validate(ctx.run_input)
    return "\n".join(f"{t.role}: {t.content}" for t in task.conversation)


consolidate_flow = Flow("learning-consolidate")


@consolidate_flow.step()
async def summarize(ctx: StepContext[Any]) -> dict[str, Any]:
    text = await ctx.llm.text(
        "Consolidate this tutoring conversation into a long-term memory of the learner: what they "
        "understood, what they got wrong, what to revisit. Three sentences at most.\n\n" + _conversation(ctx),
        stream=False,
        max_tokens=300,
    )
    return {"summary": text.strip()}


analyze_flow = Flow("learning-analyze")


@analyze_flow.step()
async def analyze(ctx: StepContext[Any]) -> dict[str, Any]:
    from storyloom.apps.learning.models import Analysis

    found = await ctx.llm.json(
        "Analyse this tutoring conversation: how well does the learner understand the topic (0-100), "
        "which gaps remain, which questions should come next?\n\n" + _conversation(ctx),
        schema=Analysis,
    )
    return found.model_dump(mode="json")
