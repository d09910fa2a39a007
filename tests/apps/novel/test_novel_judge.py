"""The knockout judge: both orders per pair, position bias cancelled, bounded calls, tie-break rule."""

from __future__ import annotations

from storyloom.apps.novel.judge import knockout, tie_break
from storyloom.apps.novel.models import AgentRun, VersionResult
from storyloom.apps.novel.schemas import JudgeVerdict


def _v(index: int, score: int = 70, length_score: float = 90.0) -> VersionResult:
    return VersionResult(
        index=index,
        style_hint="",
        ok=True,
        text=f"text {index}",
        quality_score=score,
        length_score=length_score,
    )


class Judge:
    """Scripted verdicts; records each (A, B) ordering it was shown."""

    def __init__(self, pick: str) -> None:
        self.pick = pick  # "first": position-biased; "best": the higher index wins; "none": abstains
        self.shown: list[tuple[int, int]] = []

    async def __call__(
        self, a: VersionResult, b: VersionResult, label: str
    ) -> tuple[JudgeVerdict | None, AgentRun]:
        self.shown.append((a.index, b.index))
        run = AgentRun(agent="judge", calls=1)
        if self.pick == "none":
            return None, run
        if self.pick == "first":
            return JudgeVerdict(winner="A", reasons=["first is better"]), run
        winner = "A" if a.index > b.index else "B"
        return JudgeVerdict(winner=winner, reasons=[f"{max(a.index, b.index)} is richer"]), run


async def test_consistent_judge_picks_the_best_in_bounded_calls() -> None:
    judge = Judge("best")
    report = await knockout([_v(i) for i in range(1, 11)], judge)
    assert report.winner == 10
    assert len(report.matches) == 9 and report.calls == 18  # k - 1 matches, two orders each
    assert all(m.tie_break is None and m.votes[0] == m.votes[1] for m in report.matches)
    pairs = {tuple(sorted(p)) for p in judge.shown}
    assert all((a, b) in judge.shown and (b, a) in judge.shown for a, b in pairs)  # both orders, every pair
    assert report.reasons and all("10" in r for r in report.reasons)


async def test_position_bias_becomes_a_tie_settled_by_quality() -> None:
    versions = [_v(1, score=60), _v(2, score=85), _v(3, score=70)]
    report = await knockout(versions, Judge("first"))
    assert report.winner == 2
    assert all(m.tie_break == "quality score" for m in report.matches)
    assert report.matches[0].votes == [1, 2]  # each order picked whatever it saw first


async def test_abstaining_judge_and_tie_break_order() -> None:
    report = await knockout([_v(1, 80, 70.0), _v(2, 80, 95.0)], Judge("none"))
    assert report.winner == 2 and report.matches[0].tie_break == "length score"
    assert tie_break(_v(3), _v(1)) == (_v(1), "earlier version")


async def test_single_version_needs_no_judge() -> None:
    judge = Judge("best")
    report = await knockout([_v(4)], judge)
    assert report.winner == 4 and report.calls == 0 and judge.shown == []
