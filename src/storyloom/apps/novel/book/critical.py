"""A book chapter's critical path in model time: what no scheduler could beat.

The chapter job runs, in sequence: the director; the versions in parallel, each plot → max(character,
scene) → synthesis → max(optimize, quality + continuity) → every revise round (revise, then quality
and continuity again) → length control; the judge; the memory extraction. The slowest version sets
the pace. `storyloom bench book` divides the book's wall time by the sum of these.
"""

from __future__ import annotations

from storyloom.apps.novel.models import AgentRun, ChapterResult, VersionResult

__all__ = ["chapter_critical_path_s", "version_chain_s"]


def version_chain_s(version: VersionResult) -> float:
    runs: dict[str, list[AgentRun]] = {}
    for run in version.agents:
        runs.setdefault(run.agent, []).append(run)

    def total(agent: str) -> float:
        return sum(r.model_s for r in runs.get(agent, ()))

    quality = [r.model_s for r in runs.get("quality", ())]
    checks = [r.model_s for r in runs.get("continuity", ())]
    first = (quality[0] if quality else 0.0) + (checks[0] if checks else 0.0)
    rechecks = sum(quality[1:]) + sum(checks[1:])
    return (
        total("plot")
        + max(total("character"), total("scene"))
        + total("synthesis")
        + max(total("optimize"), first)
        + total("revise")
        + rechecks
        + total("continue")
    )


def chapter_critical_path_s(result: ChapterResult, *, memory_s: float = 0.0) -> float:
    director = result.director.model_s if result.director else 0.0
    versions = max((version_chain_s(v) for v in result.versions if v.ok), default=0.0)
    judge = result.judge.elapsed_s if result.judge else 0.0
    return round(director + versions + judge + memory_s, 4)
