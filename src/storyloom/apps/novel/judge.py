"""Choosing among candidate versions: a knockout of pairwise comparisons, each pair judged twice.

LLM judges prefer whichever text they read first (position bias), so every pair is judged in both
orders and only a version that wins both counts as the clear winner. A split vote, or a judge that
could not answer, is a tie settled by the tie-break rule: the higher quality score, then the better
length score, then the earlier version. A knockout keeps the cost bounded: k versions take k − 1
matches (2(k − 1) judge calls, 18 for 10 versions) in ⌈log2 k⌉ rounds whose matches run at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from storyloom.agents import AgentRun
from storyloom.apps.novel.models import JudgeMatch, JudgeReport, VersionResult
from storyloom.apps.novel.schemas import JudgeVerdict
from storyloom.llm.types import Usage

__all__ = ["Verdict", "knockout", "tie_break"]

Verdict = Callable[[VersionResult, VersionResult, str], Awaitable[tuple[JudgeVerdict | None, AgentRun]]]
"""Judge one ordering: (first shown as A, second shown as B, a label for the call) → verdict, run."""


def tie_break(a: VersionResult, b: VersionResult) -> tuple[VersionResult, str]:
    """Higher quality score, then higher length score, then the earlier version."""
    qa, qb = a.quality_score or 0, b.quality_score or 0
    if qa != qb:
        return (a, "quality score") if qa > qb else (b, "quality score")
    if a.length_score != b.length_score:
        return (a, "length score") if a.length_score > b.length_score else (b, "length score")
    return (a, "earlier version") if a.index < b.index else (b, "earlier version")


async def _match(a: VersionResult, b: VersionResult, verdict: Verdict) -> tuple[JudgeMatch, list[AgentRun]]:
    (first, run1), (second, run2) = await asyncio.gather(
        verdict(a, b, f"{a.index}-{b.index}"), verdict(b, a, f"{b.index}-{a.index}")
    )
    votes: list[int] = []
    reasons: dict[int, list[str]] = {a.index: [], b.index: []}
    for shown, v in (((a, b), first), ((b, a), second)):
        if v is None:
            votes.append(0)  # abstained
            continue
        won = shown[0] if v.winner == "A" else shown[1]
        votes.append(won.index)
        reasons[won.index].extend(v.reasons)
    tie = None
    if votes[0] == votes[1] and votes[0] != 0:
        winner = a if votes[0] == a.index else b
    else:
        winner, tie = tie_break(a, b)
    return (
        JudgeMatch(
            a=a.index,
            b=b.index,
            winner=winner.index,
            votes=votes,
            reasons=reasons[winner.index],
            tie_break=tie,
        ),
        [run1, run2],
    )


async def knockout(versions: Sequence[VersionResult], verdict: Verdict) -> JudgeReport:
    """Pair the versions off round by round (an odd one out gets a bye) until one is left."""
    start = time.perf_counter()
    alive = sorted(versions, key=lambda v: v.index)
    if not alive:
        raise ValueError("knockout needs at least one version")
    by_index = {v.index: v for v in alive}
    matches: list[JudgeMatch] = []
    runs: list[AgentRun] = []
    while len(alive) > 1:
        pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
        played = await asyncio.gather(*(_match(a, b, verdict) for a, b in pairs))
        nxt = [by_index[m.winner] for m, _ in played]
        if len(alive) % 2:
            nxt.append(alive[-1])
        for match, match_runs in played:
            matches.append(match)
            runs.extend(match_runs)
        alive = nxt
    winner = alive[0].index
    usage = Usage()
    for r in runs:
        usage = usage.add(r.usage)
    degraded = [r.degraded for r in runs if r.degraded]
    return JudgeReport(
        winner=winner,
        matches=matches,
        reasons=[reason for m in matches if m.winner == winner for reason in m.reasons],
        calls=sum(r.calls for r in runs),
        usage=usage,
        cost_usd=round(sum(r.cost_usd for r in runs), 8),
        decided=any(m.tie_break is None for m in matches),
        elapsed_s=round(time.perf_counter() - start, 4),
        degraded=f"{len(degraded)} judge calls abstained: {degraded[0]}" if degraded else None,
    )
