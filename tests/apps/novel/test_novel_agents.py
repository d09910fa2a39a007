"""Agents against a scripted fake client (the provider boundary): retries, degradation, metering."""

from __future__ import annotations

import pytest

from storyloom.agents import AgentCall
from storyloom.apps.novel import agents
from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.models import AgentRun, ChapterRequest, NovelInput
from storyloom.errors import OutputParseError, ProviderUnavailable, StreamCutError
from storyloom.llm.types import CallMeta, ChatRequest, ChatResult, DeltaCallback, Usage

Answer = str | Exception


class ScriptedClient:
    """Answers each call with the next scripted answer; streams text answers through on_delta."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest, on_delta: DeltaCallback | None = None) -> ChatResult:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if on_delta is not None:
            for i in range(0, len(answer), 7):
                on_delta(answer[i : i + 7])
        return ChatResult(text=answer, usage=Usage(100, len(answer)), model=request.model)

    async def aclose(self) -> None:
        return None


def _call(client: ScriptedClient, agent: str, deltas: list[str] | None = None) -> AgentCall:
    return AgentCall(
        client=client,
        model=f"m-{agent}",
        meta=CallMeta(job_id="j1", step=f"versions/v1/{agent}", variant=1),
        language="zh",
        on_delta=deltas.append if deltas is not None else None,
        run=AgentRun(agent=agent),
    )


REQ = ChapterRequest(
    input=NovelInput(chapter_outline="林凡在秘境中获得上古传承。", target_length=500, genre="玄幻"),
    versions=1,
)
PLAN = {"theme": "传承", "key_events": ["进入秘境", "获得传承"], "tone": "热血"}
QUALITY = '{"score": 64, "issues": ["结尾仓促"], "summary": "林凡获得传承。"}'


async def test_director_parses_and_meters() -> None:
    client = ScriptedClient(['{"theme": "传承", "tone": "热血", "key_events": ["进入秘境"], "pacing": "快"}'])
    call = _call(client, "director")
    plan = await agents.director(call, REQ)
    assert plan["theme"] == "传承" and plan["key_events"] == ["进入秘境"]
    assert call.run.calls == 1 and call.run.degraded is None
    assert call.run.usage.prompt_tokens == 100 and call.run.model == "m-director"
    req = client.requests[0]
    assert req.json_schema is not None and req.meta.job_id == "j1" and req.meta.variant == 1
    assert "```json" in req.messages[-1]["content"] and "目标字数" not in req.messages[-1]["content"]


async def test_prose_for_json_retries_with_stricter_instruction() -> None:
    client = ScriptedClient(["这一章很好，我给八十分。", QUALITY])
    call = _call(client, "quality")
    report = await agents.quality(call, REQ, "正文")
    assert report["score"] == 64 and call.run.calls == 2 and call.run.degraded is None
    assert len(client.requests[1].messages) == len(client.requests[0].messages) + 1
    assert "无法解析" in client.requests[1].messages[-1]["content"]


async def test_two_bad_answers_degrade_to_default() -> None:
    client = ScriptedClient(["不是JSON", ""])
    call = _call(client, "quality")
    report = await agents.quality(call, REQ, "林凡走进秘境。他找到了传承。然后离开。")
    assert report["score"] == REQ.quality_threshold  # unknown quality: no blind revising
    assert report["summary"] == "林凡走进秘境。他找到了传承。"
    assert call.run.degraded is not None and "stricter retry" in call.run.degraded


async def test_optional_agent_degrades_on_provider_error_required_one_raises() -> None:
    call = _call(ScriptedClient([ProviderUnavailable("503", status=503)]), "plot")
    beats = await agents.plot(call, REQ, PLAN, "紧凑")
    assert beats["beats"] == ["进入秘境", "获得传承"] and call.run.degraded
    with pytest.raises(ProviderUnavailable):
        await agents.scene(_call(ScriptedClient([ProviderUnavailable("503")]), "scene"), REQ, PLAN, beats)


async def test_cut_json_stream_is_repaired() -> None:
    cut = StreamCutError(
        "cut", partial_text='{"setting": "秘境深处", "atmosphere": "幽暗", "sensory_details": ["水声'
    )
    call = _call(ScriptedClient([cut]), "scene")
    notes = await agents.scene(call, REQ, PLAN, {})
    assert notes["setting"] == "秘境深处" and notes["sensory_details"] == ["水声"]
    assert call.run.calls == 1 and "stream cut" in call.run.notes


async def test_synthesis_streams_and_asks_for_length() -> None:
    deltas: list[str] = []
    text = "林凡" * 200
    client = ScriptedClient([f"```\n{text}\n```"])
    call = _call(client, "synthesis", deltas)
    out = await agents.synthesis(call, REQ, plan=PLAN, plot_={}, characters=None, scene_=None, hint="紧凑")
    assert out == text and "".join(deltas).strip("`\n") == text
    assert "目标字数：500" in client.requests[0].messages[-1]["content"]
    assert client.requests[0].max_tokens is not None and client.requests[0].max_tokens >= 1000


async def test_synthesis_keeps_cut_partial_and_fails_on_two_empties() -> None:
    call = _call(ScriptedClient([StreamCutError("cut", partial_text="林凡走进")]), "synthesis")
    out = await agents.synthesis(call, REQ, plan=PLAN, plot_={}, characters=None, scene_=None, hint="")
    assert out == "林凡走进" and call.run.degraded and "stream cut" in call.run.degraded
    with pytest.raises(OutputParseError):
        await agents.synthesis(
            _call(ScriptedClient(["", "  "]), "synthesis"),
            REQ,
            plan=PLAN,
            plot_={},
            characters=None,
            scene_=None,
            hint="",
        )


@pytest.mark.parametrize(
    ("answers", "kept_draft"),
    [
        (["润色后的正文"], False),
        (["", ""], True),
        ([StreamCutError("cut", partial_text="润色")], True),
    ],
)
async def test_optimize_keeps_draft_on_empty_or_cut(answers: list[Answer], kept_draft: bool) -> None:
    call = _call(ScriptedClient(answers), "optimize")
    out = await agents.optimize(call, REQ, "草稿正文", "紧凑")
    assert (out == "草稿正文") is kept_draft
    assert (call.run.degraded is not None) is kept_draft


async def test_optimize_provider_error_propagates_for_the_flow_fallback() -> None:
    with pytest.raises(ProviderUnavailable):
        await agents.optimize(_call(ScriptedClient([ProviderUnavailable("x")]), "optimize"), REQ, "草稿", "")


async def test_revise_keeps_text_on_any_failure() -> None:
    call = _call(ScriptedClient([ProviderUnavailable("x")]), "revise")
    assert await agents.revise(call, REQ, "原文", ["结尾仓促"], "") == "原文"
    good = _call(ScriptedClient(["修改后"]), "revise")
    assert await agents.revise(good, REQ, "原文", ["结尾仓促"], "") == "修改后"


async def test_judge_verdict_and_abstention() -> None:
    v = await agents.judge(
        _call(ScriptedClient(['{"winner": "B", "reasons": ["更完整"]}']), "judge"), REQ, PLAN, "甲", "乙"
    )
    assert v is not None and v.winner == "B"
    none = await agents.judge(_call(ScriptedClient(["随便", "还是随便"]), "judge"), REQ, PLAN, "甲", "乙")
    assert none is None


def test_agent_models_override() -> None:
    models = AgentModels(default="big", overrides={"quality": "small"})
    assert models.for_agent("quality") == "small" and models.for_agent("plot") == "big"
