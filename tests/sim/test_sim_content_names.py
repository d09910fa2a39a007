"""Names come from the outline (not only from character lists); labels and style hints never become story."""

from __future__ import annotations

import random

from storyloom.apps.novel.models import NovelInput
from storyloom.apps.novel.prompts import style_hint, text_messages
from storyloom.sim.prompt import analyse
from storyloom.sim.story import story_text

ZH_OUTLINE = "少年林风在秘境中意外获得上古传承，却也因此被宗门长老盯上。"
EN_OUTLINE = "Kestrel, a young cartographer, finds a map that redraws itself each night."


def _story(language: str, outline: str, section_text: str) -> tuple[str, object]:
    inp = NovelInput(chapter_outline=outline, language=language)  # type: ignore[arg-type]
    messages = text_messages(
        "synthesis", inp, {"plot": section_text, "hint": style_hint(language, 0)}, target_length=600
    )
    facts = analyse(list(messages))
    return story_text(facts, random.Random(7), 600, "chars" if language == "zh" else "words"), facts


def test_chinese_outline_protagonist_is_in_the_story() -> None:
    text, facts = _story("zh", ZH_OUTLINE, "林风被长老追杀。")
    assert facts.names[0] == "林风"  # type: ignore[attr-defined]
    assert "林风" in text
    assert "少年林" not in facts.places  # type: ignore[attr-defined]
    assert "【" not in text and "】" not in text
    assert "以情节推进为主" not in text and "风格侧重" not in text


def test_english_outline_name_is_in_the_story() -> None:
    text, facts = _story("en", EN_OUTLINE, "The map leads Kestrel into the old quarter.")
    assert facts.names[0] == "Kestrel"  # type: ignore[attr-defined]
    assert "Kestrel" in text
    assert "plot-driven" not in text and "##" not in text and "emphasis" not in text


def test_labels_are_never_content() -> None:
    facts = analyse(
        [
            {"role": "system", "content": "你是一个小说创作团队中的主笔作家，负责写出完整的章节正文。"},
            {
                "role": "user",
                "content": f"本章大纲：{ZH_OUTLINE}\n\n【本版本的风格侧重】\n细腻抒情，着重刻画人物内心",
            },
        ]
    )
    joined = "".join(facts.phrases) + "".join(facts.places) + "".join(facts.names)
    assert "【" not in joined and "风格" not in joined and "着重刻画" not in joined and "负责" not in joined
    assert any("上古传承" in p for p in facts.phrases)


def test_same_request_same_story() -> None:
    assert _story("zh", ZH_OUTLINE, "")[0] == _story("zh", ZH_OUTLINE, "")[0]
