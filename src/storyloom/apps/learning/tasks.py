"""The learning system's background, scheduled and batch task kinds (seed 004), as job handlers.

- `learning.consolidate` (记忆固化, background, LLM): a conversation -> a memory, then its vector job
- `learning.analyze` (对话分析, background, LLM): understanding score, gaps, next questions
- `learning.embed` (向量存储): the memory's embedding through the gateway into `learning_vectors`
- `learning.cost_stats` (成本统计, scheduled): usage of learning jobs per tenant since the last run
- `learning.cleanup` (系统清理, scheduled): forget memories, vectors and analyses past retention
- `learning.export` / `export_part` (数据导出, batch): a parent, one child per session, assembled
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from storyloom.apps.learning.flow import BACKGROUND_PRIORITY, analyze_flow, consolidate_flow
from storyloom.apps.learning.models import ConversationTask, ExportTask
from storyloom.apps.learning.store import LearningStore
from storyloom.errors import InputError, StoryloomError
from storyloom.jobs.models import JobStatus
from storyloom.runner import AppJob
from storyloom.validation import from_validation

__all__ = [
    "analyze_job",
    "cleanup_job",
    "consolidate_job",
    "cost_stats_job",
    "embed_job",
    "export_job",
    "export_part_job",
]

_EXPORT_POLL_S = 0.2
DEFAULT_RETENTION_DAYS = 90.0


def _store(job: AppJob[Any]) -> LearningStore:
    store: LearningStore = job.shared("store", lambda: LearningStore(job.db))
    return store


def _task(job: AppJob[Any]) -> ConversationTask:
    from pydantic import ValidationError

    try:
        return ConversationTask.model_validate(job.payload)
    except ValidationError as exc:
        raise from_validation(exc, f"payload of {job.job.kind}") from exc


async def consolidate_job(job: AppJob[Any]) -> dict[str, Any]:
    task = _task(job)
    run = await job.run_flow(consolidate_flow, task.model_dump(mode="json"))
    summary = str(run.outputs["summarize"]["summary"])
    memory_id = await _store(job).add_memory(job.tenant, task.session_id, job.id, task.topic, summary)
    embed = await job.queue.submit(
        "learning.embed",
        {"memory_id": memory_id},
        priority=BACKGROUND_PRIORITY,
        idempotency_key=f"learning:{job.id}:embed",
        tenant=job.tenant,
        parent_id=job.id,
    )
    return {"memory_id": memory_id, "summary": summary, "embed_job": embed.id}


async def analyze_job(job: AppJob[Any]) -> dict[str, Any]:
    task = _task(job)
    run = await job.run_flow(analyze_flow, task.model_dump(mode="json"))
    found = dict(run.outputs["analyze"])
    await _store(job).add_analysis(job.tenant, task.session_id, job.id, found)
    return found


async def embed_job(job: AppJob[Any]) -> dict[str, Any]:
    memory_id = job.payload.get("memory_id")
    if not isinstance(memory_id, str):
        raise InputError("an embed job needs a 'memory_id'.")
    store = _store(job)
    memory = await store.memory(job.tenant, memory_id)
    if memory is None:
        return {"memory_id": memory_id, "stored": False, "reason": "the memory is gone"}
    from storyloom.apps.learning.vectors import embed_texts

    model, vectors = await embed_texts(job, [str(memory["summary"])])
    await store.put_vector(job.tenant, memory_id, model, vectors[0])
    return {"memory_id": memory_id, "stored": True, "model": model, "dims": len(vectors[0])}


async def cost_stats_job(job: AppJob[Any]) -> dict[str, Any]:
    store = _store(job)
    until = time.time()
    since = float(job.payload.get("since") or (await store.last_cost_period_end()) or until - 86400)
    rows = await store.record_costs(job.id, since, until)
    return {"period_start": since, "period_end": until, "tenants": rows}


async def cleanup_job(job: AppJob[Any]) -> dict[str, Any]:
    days = float(job.payload.get("retention_days", DEFAULT_RETENTION_DAYS))
    if days < 0:
        raise InputError("retention_days must be >= 0.")
    return {"retention_days": days, "removed": await _store(job).clean_up(time.time() - days * 86400)}


async def export_part_job(job: AppJob[Any]) -> dict[str, Any]:
    session_id = job.payload.get("session_id")
    if not isinstance(session_id, str):
        raise InputError("an export part needs a 'session_id'.")
    found = await _store(job).session(job.tenant, session_id, limit=10_000)
    return found or {"session_id": session_id, "memories": [], "analyses": []}


async def export_job(job: AppJob[Any]) -> dict[str, Any]:
    """A batch: one child job per session (idempotent, so a rerun finds them), then the whole."""
    from pydantic import ValidationError

    try:
        spec = ExportTask.model_validate(job.payload)
    except ValidationError as exc:
        raise from_validation(exc, "payload of learning.export") from exc
    sessions = spec.session_ids if spec.session_ids is not None else await _store(job).sessions(job.tenant)
    child_ids: list[str] = []
    for session_id in sessions:
        child = await job.queue.submit(
            "learning.export_part",
            {"session_id": session_id},
            priority=max(job.priority - 1, 0),
            idempotency_key=f"learning:{job.id}:export:{session_id}",
            tenant=job.tenant,
            parent_id=job.id,
        )
        child_ids.append(child.id)
    job.emit("export.parts", job_ids=child_ids)
    while True:
        kids = {k.id: k for k in await job.queue.children(job.id)}
        if all(kids.get(c) is not None and kids[c].status.is_terminal for c in child_ids):
            break
        await asyncio.sleep(_EXPORT_POLL_S)
    failed = [c for c in child_ids if kids[c].status is not JobStatus.COMPLETED]
    if failed:
        raise StoryloomError(
            f"{len(failed)} of {len(child_ids)} export parts did not complete: {failed[0]} first"
        )
    parts = [kids[c].result or {} for c in child_ids]
    return {
        "sessions": parts,
        "parts": child_ids,
        "memories": sum(len(p.get("memories") or []) for p in parts),
        "analyses": sum(len(p.get("analyses") or []) for p in parts),
    }
