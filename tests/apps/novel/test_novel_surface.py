"""The novel package's public surface, input files, prompts and the progress displays."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

import storyloom.apps.novel as novel
from storyloom.apps.novel.display import ChapterDisplay, PlainProgress, locate
from storyloom.apps.novel.inputs import load_novel_input
from storyloom.apps.novel.models import ChapterRequest, NovelInput
from storyloom.apps.novel.prompts import json_messages, style_hint, text_messages
from storyloom.apps.novel.schemas import PlotOutline
from storyloom.errors import InputError
from storyloom.flow import Event, EventKind


def test_public_surface() -> None:
    assert sorted(novel.__all__) == [
        "AgentModels", "AgentRun", "ChapterInput", "ChapterRequest", "ChapterResult", "Character",
        "Degradation", "JudgeMatch",
        "JudgeReport", "NovelInput", "VersionResult", "app", "choose_version", "count_length",
        "length_score", "run_chapter", "write_chapter",
    ]  # fmt: skip
    assert all(hasattr(novel, name) for name in novel.__all__)


def test_input_models_validate_with_clear_messages() -> None:
    assert NovelInput(chapter_outline=" x ").chapter_outline == "x"
    assert NovelInput(chapter_outline="林").length_goal == 2000
    assert NovelInput(chapter_outline="x", language="zh").length_goal == 2000
    assert NovelInput(chapter_outline="x", language="en").length_goal == 1200
    with pytest.raises(ValueError, match="chapter outline must not be empty"):
        NovelInput(chapter_outline="  ")
    with pytest.raises(ValueError, match="name must not be empty"):
        NovelInput(chapter_outline="x", characters=[{"name": ""}])
    for bad in ({"versions": 0}, {"versions": 11}, {"max_parallel": 0}, {"max_parallel": 11}):
        with pytest.raises(ValueError):
            ChapterRequest(input=NovelInput(chapter_outline="x"), **bad)
    assert ChapterRequest(input=NovelInput(chapter_outline="x")).versions == 2


def test_load_input_file_shapes(tmp_path: Path) -> None:
    wrapped = tmp_path / "in.json"
    wrapped.write_text(
        json.dumps({"novel_input": {"chapter_outline": "甲", "genre": "玄幻"}}), encoding="utf-8"
    )
    assert load_novel_input(wrapped).genre == "玄幻"
    assert load_novel_input(wrapped, overrides={"language": "en", "target_length": None}).language == "en"
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(InputError, match="must hold a mapping"):
        load_novel_input(listed)
    bad = tmp_path / "bad.yaml"
    bad.write_text("chapter_outline: x\ncharacters: [{name: ''}]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"characters\.0\.name"):
        load_novel_input(bad)


def test_prompts_carry_schema_last_and_length_in_both_languages() -> None:
    zh = NovelInput(chapter_outline="林凡获得传承。", characters=[{"name": "林凡", "traits": ["坚毅"]}])
    msgs = json_messages("plot", zh, {"plan": {"theme": "传承"}}, PlotOutline, previous_summary="上一章")
    body = "\n".join(m["content"] for m in msgs)
    assert msgs[-1]["content"].rstrip().endswith("```")
    assert (
        body.rstrip().endswith("```")
        and "人物：林凡" in body
        and "前情提要：上一章" in body
        and "主题：传承" in body
    )
    en = NovelInput(chapter_outline="Mara leaves.", language="en", target_length=900)
    text = text_messages("synthesis", en, {"hint": style_hint("en", 1)}, target_length=900)[-1]["content"]
    assert "Target length: 900 words" in text and "```" not in text
    assert style_hint("zh", 0) == style_hint("zh", 10) != style_hint("zh", 1)


def _events(run: str = "r") -> list[Event]:
    t = time.time()
    return [
        Event(run, EventKind.STEP_STARTED, "director", t),
        Event(run, EventKind.STEP_FINISHED, "director", t, {"elapsed_s": 0.5}),
        Event(run, EventKind.STEP_STARTED, "versions/v1/synthesis", t),
        Event(run, EventKind.STEP_DELTA, "versions/v1/synthesis", t, {"text": "林凡走进秘境" * 10}),
        Event(run, EventKind.STEP_FINISHED, "versions/v1/synthesis", t, {"elapsed_s": 1.25}),
        Event(run, EventKind.STEP_SKIPPED, "versions/v2/scene", t),
        Event(run, EventKind.STEP_FAILED, "versions/v2/synthesis", t, {"error": "ProviderUnavailable: 503"}),
        Event(run, EventKind.STEP_STARTED, "versions/v1/revise", t),
        Event(run, EventKind.STEP_STARTED, "versions/v1/revise/r2/revise", t),
        Event(run, EventKind.STEP_FINISHED, "versions/v1/revise/r2/check", t, {"elapsed_s": 0.1}),
        Event(run, EventKind.STEP_FINISHED, "versions/v1/revise", t, {"elapsed_s": 2.0}),
        Event(run, EventKind.RUN_FINISHED, None, t),
        Event(run, EventKind.STEP_FINISHED, "versions/v1/final", t),
    ]


def test_plain_progress_lines() -> None:
    out = io.StringIO()
    with PlainProgress(2, out) as sink:
        for e in _events():
            sink.emit(e)
    lines = out.getvalue().splitlines()
    assert [ln.split("] ", 1)[1].split(":")[0] for ln in lines] == [
        "director", "v1 synthesis", "v2 scene", "v2 synthesis", "v1 revise",
    ]  # fmt: skip
    assert "done 1.2s 60 tok" in lines[1] and "skipped" in lines[2] and "ProviderUnavailable" in lines[3]
    assert locate("versions/v3/revise/r1/check") == ("v3", "revise") and locate("versions") is None


def test_live_table_renders_every_state() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    with ChapterDisplay(2, console=console) as display:
        for e in _events():
            display.emit(e)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "plan" in text and "v2" in text and "judge" in text
    assert "✓r2 2.0s" in text and "✗" in text and "skip" in text


def test_language_is_detected_from_the_outline_unless_given() -> None:
    # A new user wrote English and got Chinese: the language followed a default, not the text.
    assert NovelInput(chapter_outline="Mara finds a map in the lighthouse.").language == "en"
    assert NovelInput(chapter_outline="少年林风在秘境中意外获得上古传承。").language == "zh"
    assert NovelInput(chapter_outline="林风在酒馆遇见了 Mara 和 John Smith。").language == "zh"
    assert NovelInput(chapter_outline="Mara finds a map.", language="zh").language == "zh"
