"""Model time of a finished chapter along its DAG: the critical path and the serial sum.

The critical path is what a perfect scheduler could not beat: the director, then the slowest
version's chain plot → max(character, scene) → synthesis → max(optimize, quality) → every revise
round (revise then re-check, strictly in sequence). Judging is reported apart: it is a separate
phase whose cost depends on the number of versions by design.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyloom.apps.novel.models import AgentRun, ChapterResult, VersionResult

__all__ = ["ModelTimes", "model_times", "version_critical_path"]


@dataclass(frozen=True, slots=True)
class ModelTimes:
    critical_path_s: float  # director + the slowest version's chain (judge excluded)
    serial_s: float  # every model call one after another (judge excluded)
    judge_s: float  # the judge phase's wall time


def _time(runs: dict[str, list[AgentRun]], agent: str) -> float:
    return sum(r.model_s for r in runs.get(agent, ()))


def version_critical_path(version: VersionResult) -> float:
    """plot → max(character, scene) → synthesis → max(optimize, first quality) → revise rounds."""
    by_agent: dict[str, list[AgentRun]] = {}
    for run in version.agents:
        by_agent.setdefault(run.agent, []).append(run)
    quality = [r.model_s for r in by_agent.get("quality", ())]
    first_check = quality[0] if quality else 0.0
    rechecks = sum(quality[1:])  # quality runs after the first belong to revise rounds
    return (
        _time(by_agent, "plot")
        + max(_time(by_agent, "character"), _time(by_agent, "scene"))
        + _time(by_agent, "synthesis")
        + max(_time(by_agent, "optimize"), first_check)
        + _time(by_agent, "revise")
        + rechecks
    )


def model_times(result: ChapterResult) -> ModelTimes:
    director = result.director.model_s if result.director else 0.0
    ok = [v for v in result.versions if v.ok]
    critical = director + max((version_critical_path(v) for v in ok), default=0.0)
    serial = director + sum(r.model_s for v in result.versions for r in v.agents)
    judge = result.judge.elapsed_s if result.judge else 0.0
    return ModelTimes(critical_path_s=round(critical, 4), serial_s=round(serial, 4), judge_s=round(judge, 4))
