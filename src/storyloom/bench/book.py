"""The book benchmark (`storyloom bench book --json`): a whole book on the real engine.

A 20-chapter book (outlined by the plan job), 2 versions per chapter, the judge choosing, written
by the book runner on a worker in this process over a SQLite store, every call through the gateway
to the simulator in its own process with a fixed latency per answer (`latency_s`: every answer
takes exactly that long, so each chapter's model time is known). Reported:

- wall time of the run ÷ the sum of every chapter's critical path (director, slowest version's
  chain, judge, memory: `apps/novel/book/critical.py`), goal ≤ 1.05;
- tokens per chapter and the prompt cache-hit share (cached ÷ prompt tokens), goal ≥ 60%;
- the context size per agent at chapters 1, 10 and 20 (prompt tokens of each agent's calls) and
  the book context pack against its budget;
- length adherence per chapter (length ÷ target; within 0.9..1.1 counts as met);
- coverage of the outline (numbering 1..N, no gap, no duplicate, every chapter summarised).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storyloom.serve.simulator import SimProcess

__all__ = ["CACHE_HIT_MIN", "WALL_OVER_CRITICAL_MAX", "run_book_bench"]

WALL_OVER_CRITICAL_MAX = 1.05
CACHE_HIT_MIN = 0.60


def _sim_config(latency_s: float) -> dict[str, Any]:
    return {
        "seed": 11,
        "default": {"latency_s": latency_s, "ttft_s": 0.0, "tokens_per_s": 1_000_000.0},
        "chunk_interval_s": 0.02,
        "chunk_tokens": 64,
    }


async def _wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await check()
        if got is not None:
            return got
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")


def _agent(step: str | None) -> str:
    parts = [p for p in (step or "").split("/") if p and not (p[0] == "v" and p[1:].isdigit())]
    return parts[-1] if parts else "?"


async def run_book_bench(
    *,
    chapters: int = 20,
    versions: int = 2,
    latency_s: float = 1.0,
    target_length: int = 400,
    concurrency: int = 8,
) -> dict[str, Any]:
    from storyloom.apps.novel.agents import AgentModels
    from storyloom.apps.novel.book.control import BookControl
    from storyloom.apps.novel.book.plan import PLAN_JOB_KIND
    from storyloom.apps.novel.book.runs import Chooser
    from storyloom.apps.novel.context import ContextBudget
    from storyloom.apps.novel.projects import ProjectStore
    from storyloom.config import Settings
    from storyloom.jobs.queue import JobQueue
    from storyloom.jobs.worker import Worker, WorkerConfig
    from storyloom.llm.factory import build_client
    from storyloom.registry import AppRegistry
    from storyloom.runner import WorkerServices, app_handlers
    from storyloom.store.database import Database
    from storyloom.store.schema import usage

    sim = await asyncio.to_thread(SimProcess, _sim_config(latency_s))
    tmp = tempfile.TemporaryDirectory(prefix="storyloom-bench-book-")
    registry = AppRegistry.discover()
    db = Database.from_url(f"sqlite+aiosqlite:///{Path(tmp.name) / 'book.db'}")
    settings = Settings(_env_file=None, profile="sim", limits_url="memory://")  # type: ignore[call-arg]
    client = build_client(settings, sim_url=sim.url)
    try:
        await db.migrate(registry.migrations())
        queue = JobQueue(db)
        services = WorkerServices(
            db=db, registry=registry, client=client, models=AgentModels(default="sim-writer")
        )
        worker = Worker(
            db,
            app_handlers(registry),
            services=services,
            queue=queue,
            config=WorkerConfig(concurrency=concurrency, poll_s=0.02, heartbeat_s=0.5, schedule_every_s=None),
        )
        task = asyncio.create_task(worker.run())
        try:
            book = await ProjectStore(db).create_project(
                title="The Salt Road",
                premise="A courier carries salt across a desert ruled by rival guilds.",
                language="en",
                genre="adventure",
            )
            plan_started = time.perf_counter()
            request = {
                "title": book.title,
                "premise": book.premise,
                "chapters": chapters,
                "language": "en",
                "genre": "adventure",
                "target_length": target_length,
            }
            plan_job = await queue.submit(PLAN_JOB_KIND, {"book_id": book.id, "request": request})

            async def plan_done() -> Any:
                job = await queue.get(plan_job.id)
                return job if job.status.is_terminal else None

            planned = await _wait(plan_done, 600, "the outline")
            plan_wall = time.perf_counter() - plan_started
            if planned.status.value != "completed":
                raise RuntimeError(f"the plan job failed: {planned.error}")
            control = BookControl(db, queue)
            started = time.perf_counter()
            run = await control.start(book, first=1, last=chapters, versions=versions, chooser=Chooser.JUDGE)

            async def run_done() -> Any:
                got = await control.runs.get(run.id)
                return got if got is not None and got.status.is_terminal else None

            done = await _wait(run_done, 3600, "the book")
            wall = time.perf_counter() - started
        finally:
            worker.stop()
            await task
        entries = {int(k): v for k, v in done.progress.items()}
        job_of = {n: str(e["job_id"]) for n, e in entries.items()}
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(usage.c.job_id, usage.c.step, usage.c.prompt_tokens).where(
                        usage.c.job_id.in_([job_of[n] for n in (1, chapters // 2, chapters) if n in job_of])
                    )
                )
            ).all()
        per_agent: dict[str, dict[str, int]] = {}
        for n in (1, chapters // 2, chapters):
            agents: dict[str, int] = {}
            for job_id, step, prompt in rows:
                if job_id == job_of.get(n):
                    name = _agent(step)
                    agents[name] = max(agents.get(name, 0), int(prompt))
            per_agent[str(n)] = dict(sorted(agents.items()))
        budget = ContextBudget().total_tokens
        critical = sum(float(e.get("critical_path_s") or 0.0) for e in entries.values())
        prompt = sum(int(e.get("prompt_tokens") or 0) for e in entries.values())
        cached = sum(int(e.get("cached_tokens") or 0) for e in entries.values())
        adherence = {str(n): e.get("length_adherence") for n, e in sorted(entries.items())}
        met = [a for a in adherence.values() if isinstance(a, int | float) and 0.9 <= a <= 1.1]
        coverage = (planned.result or {}).get("coverage") or {}
        context_pack = {
            str(n): entries[n].get("context_tokens") for n in (1, chapters // 2, chapters) if n in entries
        }
        growth = {
            agent: round(per_agent[str(chapters)].get(agent, 0) / max(1, tokens), 3)
            for agent, tokens in per_agent["1"].items()
        }
        ratio = round(wall / critical, 4) if critical else None
        share = round(cached / prompt, 4) if prompt else 0.0
        within = all(int(v or 0) <= budget for v in context_pack.values())
        return {
            "bench": "book",
            "simulator": f"separate process (storyloom sim --config), every answer exactly {latency_s} s",
            "chapters": chapters,
            "versions": versions,
            "target_length": target_length,
            "run_status": done.status.value,
            "chapters_written": done.done,
            "wall_s": round(wall, 3),
            "sum_critical_path_s": round(critical, 3),
            "wall_over_critical_path": ratio,
            "plan_wall_s": round(plan_wall, 3),
            # per chapter: critical path, and the chapter job's own time from its context to its choice
            "critical_path_s_per_chapter": {
                str(n): e.get("critical_path_s") for n, e in sorted(entries.items())
            },
            "job_elapsed_s_per_chapter": {str(n): e.get("elapsed_s") for n, e in sorted(entries.items())},
            "tokens_per_chapter": {str(n): e.get("tokens") for n, e in sorted(entries.items())},
            "cost_usd": round(done.cost_usd, 6),
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "cache_hit_share": share,
            "context_tokens_per_agent": per_agent,
            "context_growth_chapter_last_over_first": growth,
            "book_context_tokens": context_pack,
            "book_context_budget_tokens": budget,
            "context_within_budget": within,
            "length_adherence": adherence,
            "length_within_10pct": f"{len(met)}/{len(adherence)}",
            "coverage": coverage,
            "targets": {
                "wall_over_critical_path_max": WALL_OVER_CRITICAL_MAX,
                "cache_hit_share_min": CACHE_HIT_MIN,
            },
            "pass": bool(
                done.status.value == "completed"
                and ratio is not None
                and ratio <= WALL_OVER_CRITICAL_MAX
                and share >= CACHE_HIT_MIN
                and within
                and coverage.get("ok", False)
            ),
        }
    finally:
        await client.aclose()
        await db.close()
        await asyncio.to_thread(sim.close)
        tmp.cleanup()
