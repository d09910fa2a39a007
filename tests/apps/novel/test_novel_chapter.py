"""The whole chapter flow against the real simulator over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from storyloom.apps.novel.agents import AGENTS, AgentModels
from storyloom.apps.novel.chapter import choose_version, write_chapter
from storyloom.apps.novel.models import ChapterRequest, NovelInput
from storyloom.errors import AllVersionsFailedError, InputError, ProviderUnavailable
from storyloom.flow import EventKind, ListSink, MemoryCheckpoints
from storyloom.llm.client import HttpModelClient
from storyloom.llm.types import ChatRequest, ChatResult, DeltaCallback, ModelClient

# Each agent its own model name, so faults can target one agent.
MODELS = AgentModels(default="sim-writer", overrides={a: f"m-{a}" for a in AGENTS})

ZH = NovelInput(
    overall_outline="少年林凡在玄幻世界修炼成神。",
    chapter_outline="林凡在青云山秘境中获得上古传承，却被宿敌赵天追杀。",
    genre="玄幻",
    characters=[{"name": "林凡", "role": "主角", "traits": ["坚毅"]}, {"name": "赵天", "role": "反派"}],
    target_length=600,
)
EN = NovelInput(
    chapter_outline="Mara finds a map in her late father's desk and decides to follow it to Greywater.",
    characters=[{"name": "Mara", "role": "protagonist"}, {"name": "Tom", "role": "her brother"}],
    language="en",
    target_length=400,
)


@pytest.fixture
async def client(sim: Any) -> AsyncIterator[HttpModelClient]:
    c = HttpModelClient(sim.url, None, connect_timeout_s=5, ttft_timeout_s=20, total_timeout_s=60)
    yield c
    await c.aclose()


class Recording:
    """Wraps the real client: records every call's metadata, can fail chosen calls."""

    def __init__(self, inner: ModelClient, fail: Any = None) -> None:
        self.inner = inner
        self.fail = fail
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        self.requests.append(request)
        if self.fail is not None and self.fail(request):
            raise ProviderUnavailable("injected 503", status=503)
        return await self.inner.chat(request, on_delta)

    async def aclose(self) -> None:
        return None

    def steps(self) -> Counter[str]:
        return Counter(str(r.meta.step) for r in self.requests)


def _cjk_share(text: str) -> float:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) / max(1, len(text.replace(" ", "")))


async def test_zh_chapter_two_versions(client: HttpModelClient) -> None:
    rec = Recording(client)
    sink = ListSink()
    req = ChapterRequest(input=ZH, versions=2, quality_threshold=0)  # no revise: deterministic call count
    result = await write_chapter(
        req, client=rec, models=MODELS, run_id="zh-1", sink=sink, tenant="t1", priority=7
    )
    assert [v.ok for v in result.versions] == [True, True]
    # The simulator's verdicts follow the prompt's bytes: a split vote is a judged tie, settled by rule.
    assert result.chosen in (1, 2) and result.chosen_by in ("judge", "tie-break")
    assert result.judge is not None and (result.chosen_by == "judge") == (
        result.judge.matches[0].tie_break is None
    )
    for v in result.versions:
        assert _cjk_share(v.text) > 0.5 and v.length_score > 50 and v.summary
        assert {a.agent for a in v.agents} == {
            "plot",
            "character",
            "scene",
            "synthesis",
            "optimize",
            "quality",
        }
        assert v.usage.completion_tokens > 0 and not v.degraded
    assert result.versions[0].style_hint != result.versions[1].style_hint
    judge = result.judge
    assert (
        judge is not None
        and judge.calls == 2
        and len(judge.matches) == 1
        and len(judge.matches[0].votes) == 2
    )
    # 1 director + 2 x 6 version agents + 2 judge calls, each with the run's metadata.
    assert len(rec.requests) == 15
    assert all(
        r.meta.job_id == "zh-1" and r.meta.tenant == "t1" and r.meta.priority == 7 for r in rec.requests
    )
    assert {r.meta.variant for r in rec.requests if r.meta.step and "/v2/" in r.meta.step} == {2}
    assert rec.steps()["versions/v1/synthesis"] == 1
    assert {r.model for r in rec.requests} == {f"m-{a}" for a in AGENTS if a != "revise"}
    deltas = [e for e in sink.of(EventKind.STEP_DELTA) if e.step == "versions/v1/synthesis"]
    assert deltas and sum(len(e.data["text"]) for e in deltas) >= len(result.versions[0].text) // 2
    assert result.usage.total_tokens == sum(v.usage.total_tokens for v in result.versions) + (
        judge.usage.total_tokens + (result.director.usage.total_tokens if result.director else 0)
    )
    dumped = result.model_dump_json()
    assert "judge" in dumped and result.summary == result.chosen_version.summary


async def test_en_single_version_and_revise_loop(client: HttpModelClient, sim: Any) -> None:
    sim.configure(models={"m-quality": {"score_range": [20, 40]}})  # always below 70: revise twice
    req = ChapterRequest(input=EN, versions=1)
    result = await write_chapter(req, client=client, models=MODELS, run_id="en-1")
    v = result.versions[0]
    assert result.chosen_by == "only" and result.judge is not None and result.judge.calls == 0
    assert v.revise_rounds == 2 and v.quality_score is not None and v.quality_score < 70
    assert [a.agent for a in v.agents].count("revise") == 2 and [a.agent for a in v.agents].count(
        "quality"
    ) == 3
    assert _cjk_share(v.text) == 0 and 200 <= v.length <= 800


async def test_faults_degrade_but_the_chapter_completes(client: HttpModelClient, sim: Any) -> None:
    sim.configure(
        models={
            "m-optimize": {"faults": {"error_5xx": 1.0}},
            "m-quality": {"faults": {"prose_json": 1.0}},
            "m-character": {"faults": {"stream_cut": 1.0}},
            "m-scene": {"faults": {"empty": 1.0}},
            "m-director": {"faults": {"prose_json": 0.5}},
        }
    )
    result = await write_chapter(
        ChapterRequest(input=ZH, versions=1), client=client, models=MODELS, run_id="f-1"
    )
    v = result.versions[0]
    assert v.ok and v.text
    runs = {a.agent: a for a in v.agents}
    assert runs["optimize"].error and "ProviderUnavailable" in runs["optimize"].error  # fallback: the draft
    assert runs["quality"].degraded and runs["quality"].calls == 2  # prose twice → default score
    assert v.quality_score == 70 and v.revise_rounds == 0
    assert runs["scene"].degraded and runs["scene"].calls == 2
    assert runs["character"].calls >= 1  # a cut JSON stream: repaired, retried or degraded, never fatal
    assert {"optimize", "quality", "scene"} <= set(v.degraded)


async def test_cut_synthesis_keeps_partial_text(client: HttpModelClient, sim: Any) -> None:
    sim.configure(models={"m-synthesis": {"faults": {"stream_cut": 1.0}}})
    result = await write_chapter(
        ChapterRequest(input=ZH, versions=1), client=client, models=MODELS, run_id="c-1"
    )
    v = result.versions[0]
    synth = next(a for a in v.agents if a.agent == "synthesis")
    assert v.ok and v.text and synth.degraded and "stream cut" in synth.degraded


async def test_one_version_fails_the_others_are_kept(client: HttpModelClient) -> None:
    rec = Recording(client, fail=lambda r: r.meta.variant == 2 and r.model == "m-synthesis")
    req = ChapterRequest(input=ZH, versions=3, max_parallel=2, quality_threshold=0)
    result = await write_chapter(req, client=rec, models=MODELS, run_id="p-1")
    assert [v.ok for v in result.versions] == [True, False, True]
    failed = result.versions[1]
    assert failed.error and "ProviderUnavailable" in failed.error and failed.text == ""
    assert result.chosen in (1, 3) and result.judge is not None and result.judge.calls == 2
    with pytest.raises(InputError):
        choose_version(result, 2)
    with pytest.raises(InputError):
        choose_version(result, 4)
    override = choose_version(result, 3 if result.chosen == 1 else 1)
    assert override.chosen_by == "user" and override.text == override.versions[override.chosen - 1].text


async def test_all_versions_failing_is_an_error(client: HttpModelClient, sim: Any) -> None:
    sim.configure(models={"m-synthesis": {"faults": {"error_5xx": 1.0}}})
    with pytest.raises(AllVersionsFailedError) as info:
        await write_chapter(ChapterRequest(input=EN, versions=2), client=client, models=MODELS, run_id="a-1")
    assert len(info.value.errors) == 2 and all("ProviderUnavailable" in e for e in info.value.errors)


async def test_three_versions_knockout_judges_each_pair_in_both_orders(client: HttpModelClient) -> None:
    rec = Recording(client)
    req = ChapterRequest(input=EN, versions=3, quality_threshold=0)
    result = await write_chapter(req, client=rec, models=MODELS, run_id="k-1")
    judge = result.judge
    assert judge is not None and len(judge.matches) == 2 and judge.calls == 4
    judged = [r.meta.step for r in rec.requests if r.model == "m-judge"]
    assert sorted(judged) == sorted(
        ["judge/1-2", "judge/2-1", f"judge/{judge.matches[0].winner}-3", f"judge/3-{judge.matches[0].winner}"]
    )
    assert judge.winner == result.chosen


class _Watching(MemoryCheckpoints):
    """Checkpoints that signal when one step has been saved."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step
        self.hit = asyncio.Event()

    async def save(self, run_id: str, step: str, value: Any) -> None:
        await super().save(run_id, step, value)
        if step == self.step:
            self.hit.set()


async def test_rerun_after_crash_skips_finished_steps(client: HttpModelClient) -> None:
    store = _Watching("versions/v1/synthesis")
    req = ChapterRequest(input=ZH, versions=2, quality_threshold=0)
    first = Recording(client)
    task = asyncio.create_task(
        write_chapter(req, client=first, models=MODELS, run_id="job-9", checkpoints=store)
    )
    await store.hit.wait()
    task.cancel()  # the "crash": in-flight steps are lost, finished ones are checkpointed
    with pytest.raises(asyncio.CancelledError):
        await task
    done_before = set(store.runs["job-9"])
    second = Recording(client)
    result = await write_chapter(req, client=second, models=MODELS, run_id="job-9", checkpoints=store)
    assert all(v.ok for v in result.versions)
    rerun = set(second.steps())
    assert "director" in done_before and "director" not in rerun
    assert not (rerun & done_before), "a finished step was paid for twice"
    assert "versions/v1/synthesis" not in rerun and len(second.requests) < 15
    # A third run restores everything and calls no model at all.
    third = Recording(client)
    again = await write_chapter(req, client=third, models=MODELS, run_id="job-9", checkpoints=store)
    assert third.requests == [] and again.chosen == result.chosen


async def test_through_the_gateway_with_random_faults(sim: Any) -> None:
    """The real client stack (gateway: retries, breaker) under a mix of every fault kind."""
    from storyloom.config import Settings
    from storyloom.llm.factory import build_client

    sim.configure(
        faults={"error_5xx": 0.1, "prose_json": 0.3, "empty": 0.05, "stream_cut": 0.05, "error_429": 0.05}
    )
    settings = Settings(_env_file=None, profile="sim")  # type: ignore[call-arg]
    gateway = build_client(settings, sim_url=sim.url)
    try:
        req = ChapterRequest(input=ZH, versions=2, quality_threshold=0)
        result = await write_chapter(
            req, client=gateway, models=AgentModels.from_settings(settings), run_id="g-1"
        )
    finally:
        await gateway.aclose()
    assert any(v.ok and v.text for v in result.versions)
    assert sim.stats()["faults"]["prose_json"] > 0  # the faults really happened


async def test_a_hanging_scene_is_skipped_after_its_deadline(sim: Any) -> None:
    sim.configure(models={"m-scene": {"faults": {"hang": 1.0}}})
    client = HttpModelClient(sim.url, None, connect_timeout_s=5, ttft_timeout_s=0.5, total_timeout_s=30)
    try:
        result = await write_chapter(
            ChapterRequest(input=EN, versions=1, quality_threshold=0),
            client=client,
            models=MODELS,
            run_id="h-1",
        )
    finally:
        await client.aclose()
    v = result.versions[0]
    scene = next(a for a in v.agents if a.agent == "scene")
    assert v.ok and v.text and scene.error and "ProviderTimeout" in scene.error and "scene" in v.degraded
