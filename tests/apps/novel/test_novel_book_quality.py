"""Length control, quality measures and continuity in the chapter flow, against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from book_support import http_client

from storyloom.agents import AgentCall
from storyloom.apps.novel.agents import AgentModels
from storyloom.apps.novel.chapter import write_chapter
from storyloom.apps.novel.continuity import (
    ContinuityFacts,
    ContinuityIssue,
    DeadCharacter,
    rule_checks,
    verified,
)
from storyloom.apps.novel.length import count_length, fit_length, trim_to
from storyloom.apps.novel.models import ChapterRequest, NovelInput
from storyloom.apps.novel.quality import ChapterEval, evaluate, measure, ngram_repetition, slop_score
from storyloom.llm.types import CallMeta


def test_trim_never_cuts_a_sentence() -> None:
    text = " ".join(f"Sentence number {i} ends here." for i in range(100))  # 5 words each
    trimmed = trim_to(text, 52, "en")
    assert trimmed.endswith("here.") and count_length(trimmed, "en") == 50
    assert (
        trim_to("no sentence end at all but many words", 3, "en") == "no sentence end at all but many words"
    )
    zh = "林凡走进山门。" * 50
    assert trim_to(zh, 30, "zh").endswith("。") and count_length(trim_to(zh, 30, "zh"), "zh") == 30


async def test_fit_length_continues_a_short_chapter_and_trims_a_long_one(sim: Any) -> None:
    client = http_client(sim)
    try:
        for language, outline in (("en", "Mara leaves the harbor at dawn."), ("zh", "林凡离开山门。")):
            req = ChapterRequest(
                input=NovelInput(chapter_outline=outline, language=language, target_length=400)
            )
            call = AgentCall(client=client, model="sim-writer", meta=CallMeta(), language=language)
            short = "Mara woke." if language == "en" else "林凡醒了。"
            fitted = await fit_length(call, req, short)
            assert fitted.action == "continued" and 0.9 <= fitted.length / 400 <= 1.1, fitted.length
            assert fitted.text.startswith(short) and call.run.calls >= 1
            long = (" Mara walked on." if language == "en" else "林凡继续前行。") * 400
            trimmed = await fit_length(call, req, long)
            assert trimmed.action == "trimmed" and 0.9 <= trimmed.length / 400 <= 1.1
    finally:
        await client.aclose()


@pytest.mark.parametrize("language", ["en", "zh"])
async def test_every_version_is_within_ten_percent_and_measured(sim: Any, language: str) -> None:
    client = http_client(sim)
    outline = "Mara crosses the marsh with the key." if language == "en" else "林凡带着钥匙穿过沼泽。"
    req = ChapterRequest(
        input=NovelInput(chapter_outline=outline, language=language, target_length=500), versions=2
    )
    try:
        result = await write_chapter(
            req, client=client, models=AgentModels(default="sim-writer"), run_id=f"len-{language}"
        )
    finally:
        await client.aclose()
    for v in result.versions:
        assert v.ok and 0.9 <= v.length_adherence <= 1.1, (v.length, v.length_fit)
        m = v.measures
        assert m["within_10pct"] and m["target"] == 500 and 0.0 <= m["repetition"] <= 1.0 and m["slop"] >= 0.0


def test_repetition_and_slop_measures() -> None:
    fresh = "The courier counted the coins, then folded the map and walked toward the northern gate."
    looped = "She walked to the gate. " * 20
    assert ngram_repetition(fresh) == 0.0 and ngram_repetition(looped) > 0.8
    score, hits = slop_score("A shiver ran; it was a testament to her will, a testament to hope.", "en")
    assert hits == ["a testament to"] and score > 0
    zh_score, zh_hits = slop_score("他嘴角微微上扬，倒吸一口凉气。", "zh")
    assert zh_score > 0 and "倒吸一口凉气" in zh_hits
    m = measure(looped, target=100, language="en")
    assert m.length == 100 and m.within_10pct and m.repetition > 0.8


def test_trend_flags_a_book_that_degrades() -> None:
    rows = [
        ChapterEval(
            number=k,
            length=100,
            target=100,
            length_score=100.0,
            adherence=1.0,
            repetition=0.01 * k,
            slop=0.0,
            continuity_issues=0,
        )
        for k in range(1, 21)
    ]
    report = evaluate(rows)
    assert report.trend["repetition"].degraded and report.trend["repetition"].slope > 0
    assert not report.trend["slop"].degraded and not report.trend["length_score"].degraded


def test_rules_catch_a_dead_character_speaking_and_a_jump_in_place() -> None:
    facts = ContinuityFacts(
        number=5,
        dead=[DeadCharacter(name="Olen", chapter=3)],
        locations={"Mara": "Port Vell"},
        places=["Port Vell", "Greyhold"],
    )
    text = 'Mara stood in Greyhold at noon. Olen said, "You are late." Mara remembered Olen\'s grave.'
    issues = rule_checks(text, facts, "en")
    kinds = {i.kind: i for i in issues}
    assert kinds["dead_character"].evidence == 'Olen said, "You are late."'
    assert "chapter 3" in kinds["dead_character"].memory
    assert kinds["location"].evidence == "Mara stood in Greyhold at noon."
    travelled = "Mara rode north for three days. Mara stood in Greyhold at noon."
    assert not [i for i in rule_checks(travelled, facts, "en") if i.kind == "location"]
    zh = ContinuityFacts(dead=[DeadCharacter(name="王虎", chapter=2)])
    assert rule_checks("王虎冷笑道：“你来了。”", zh, "zh")[0].kind == "dead_character"
    assert not rule_checks("林凡想起王虎生前的话。", zh, "zh")
    invented = [ContinuityIssue(message="x", evidence="a sentence that is not in the draft")]
    assert verified(invented, text) == []


async def test_continuity_issues_feed_the_revise_loop(sim: Any) -> None:
    client = http_client(sim)
    facts = ContinuityFacts(dead=[DeadCharacter(name="Mara", chapter=1)])
    req = ChapterRequest(
        input=NovelInput(
            chapter_outline="Mara says goodbye to Olen at the gate.", language="en", target_length=300
        ),
        versions=1,
        continuity=facts,
        max_revise_rounds=1,
    )
    try:
        result = await write_chapter(
            req, client=client, models=AgentModels(default="sim-writer"), run_id="cont"
        )
    finally:
        await client.aclose()
    version = result.versions[0]
    agents = [a.agent for a in version.agents]
    assert "continuity" in agents  # the agent ran (first check and recheck)
    assert version.continuity, "the simulator's draft contradicts memory"
    squashed = version.text.replace(" ", "")
    assert all(i.evidence and i.evidence.replace(" ", "") in squashed for i in version.continuity)
    assert any(i.startswith("Continuity:") for i in version.issues)  # what the revise loop is given
    assert version.revise_rounds == 1 and agents.count("continuity") == 2


async def test_the_shared_prompt_part_is_a_byte_identical_prefix_and_mostly_cached(sim: Any) -> None:
    from book_support import Router

    seen: list[list[dict[str, str]]] = []

    client = Router(http_client(sim), lambda _text: None)
    inner_chat = client.chat

    async def chat(request: Any, on_delta: Any = None) -> Any:
        seen.append([dict(m) for m in request.messages])
        return await inner_chat(request, on_delta)

    client.chat = chat  # type: ignore[method-assign]
    context = "## Story bible\n" + "Mara carries the last letter across the drowned empire. " * 120
    req = ChapterRequest(
        input=NovelInput(
            chapter_outline="Mara reaches the city.", language="en", target_length=400, book_context=context
        ),
        versions=2,
    )
    try:
        result = await write_chapter(
            req, client=client, models=AgentModels(default="sim-writer"), run_id="cache"
        )
    finally:
        await client.aclose()
    systems = {m[0]["content"] for m in seen}
    assert len(systems) == 1  # one system message for every agent
    director, *others = [m[1]["content"] for m in seen]
    assert all(o == others[0] for o in others)  # plan included: the same bytes for every agent and version
    assert others[0].startswith(director) and context in director
    assert result.cache_hit_share >= 0.6 and result.usage.cached_tokens > 0
