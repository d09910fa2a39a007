"""The learning app (seed 004, the Feynman learning system): its task kinds as durable jobs.

The main job answers a learner's message (streamed) and queues memory consolidation and
conversation analysis behind it; vector storage, scheduled cost statistics and clean-up, and a
batch export (a parent and one child per session) are job kinds of their own. `/api/learning`
adds the chat endpoint and the immediate path (`?wait=2s`: inline if done in time, else the job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storyloom.app import App, AppTables, Schedule
from storyloom.apps.learning.models import Analysis, ConversationTask, ExportTask, LearningInput

__all__ = ["Analysis", "ConversationTask", "ExportTask", "LearningInput", "app"]


def _flow() -> Any:
    from storyloom.apps.learning.flow import chat_flow

    return chat_flow


def _deps(job: Any) -> Any:
    from storyloom.apps.learning.flow import LearningDeps
    from storyloom.apps.learning.store import LearningStore

    store = job.shared("store", lambda: LearningStore(job.db))
    return LearningDeps(store=store, queue=job.queue, tenant=job.tenant, job_id=job.id)


def _result(run: Any) -> dict[str, Any]:
    return {"text": run.outputs["answer"]["text"], "background": run.outputs["follow_up"]["background"]}


def _kind(name: str) -> Any:
    async def handle(job: Any) -> Any:
        from storyloom.apps.learning import tasks

        return await getattr(tasks, f"{name}_job")(job)

    handle.__name__ = f"{name}_job"
    return handle


def _routes() -> Any:
    from storyloom.apps.learning.routes import router

    return router


app: App[LearningInput] = App(
    name="learning",
    title="Feynman learning",
    description="A tutor's answer inline; memory consolidation, analysis, vectors, cost stats, "
    "clean-up and export as background, scheduled and batch jobs.",
    input=LearningInput,
    flow=_flow(),
    deps=_deps,
    result=_result,
    answer_step="answer",
    routes=_routes,
    tables=AppTables(migrations=Path(__file__).with_name("migrations")),
    jobs={
        kind: _kind(kind)
        for kind in ("consolidate", "analyze", "embed", "cost_stats", "cleanup", "export", "export_part")
    },
    schedules=[
        Schedule(name="cost-stats", kind="cost_stats", every_s=3600),
        Schedule(name="cleanup", kind="cleanup", every_s=24 * 3600, payload={"retention_days": 90}),
    ],
)
