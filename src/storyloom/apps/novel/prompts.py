"""Every prompt the chapter agents send, in Chinese and English.

Each structured agent ends its prompt with its JSON schema in a ```json fence (the contract with
providers and the simulator); prose agents state the target length as "目标字数：N" / "target
length: N words", the phrasings the simulator and most models follow.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from storyloom.agents.parsing import prompt_schema
from storyloom.apps.novel.bookprompts import layout
from storyloom.apps.novel.models import NovelInput
from storyloom.llm.types import Message

__all__ = [
    "STYLE_HINTS",
    "brief",
    "json_messages",
    "layout",
    "render_section",
    "role_line",
    "shared_part",
    "stricter",
    "style_hint",
    "text_messages",
]

# Seed 002's versions differ only by sampling; a style hint per version makes them worth comparing.
STYLE_HINTS: dict[str, tuple[str, ...]] = {
    "zh": (
        "节奏紧凑明快，以情节推进为主",
        "细腻抒情，着重刻画人物内心",
        "画面感强，注重场景与氛围",
        "对话驱动，人物个性鲜明",
        "悬念迭起，张弛有度",
        "冷峻克制，白描为主",
        "幽默轻快，语言灵动",
        "厚重沉稳，富有史诗感",
        "意象丰富，诗意盎然",
        "多线交织，视角灵活",
    ),
    "en": (
        "brisk and plot-driven",
        "lyrical, close to the characters' inner lives",
        "cinematic, rich in setting and atmosphere",
        "dialogue-driven, with distinct voices",
        "suspenseful, with rising tension",
        "spare and restrained",
        "light and witty",
        "grand and weighty, with an epic feel",
        "image-rich and poetic",
        "interwoven threads and shifting viewpoints",
    ),
}

_ROLES = {
    "zh": {
        "director": "总导演，负责制定本章的创作计划",
        "plot": "情节设计师，负责设计本章的情节节拍",
        "character": "人物塑造师，负责设计人物在本章的表现与对白",
        "scene": "场景渲染师，负责设计本章的场景与氛围",
        "synthesis": "主笔作家，负责写出完整的章节正文",
        "optimize": "文字编辑，负责润色文笔",
        "quality": "质量审核员，负责评估章节质量",
        "revise": "修订作家，负责根据审核意见修改章节",
        "judge": "评审，负责比较两个版本的优劣",
        "continue": "主笔作家，负责续写未完成的章节",
        "continuity": "连续性审校，负责核对章节与故事记忆是否矛盾",
    },
    "en": {
        "director": "director, who plans the chapter",
        "plot": "plot designer, who lays out the chapter's beats",
        "character": "character designer, who shapes how the characters act and speak",
        "scene": "scene designer, who renders the setting and atmosphere",
        "synthesis": "lead writer, who writes the full chapter",
        "optimize": "line editor, who polishes the prose",
        "quality": "quality reviewer, who scores the chapter",
        "revise": "reviser, who fixes the chapter from the review",
        "judge": "judge, who compares two versions",
        "continue": "lead writer, who finishes a chapter that is too short",
        "continuity": "continuity editor, who checks the chapter against the story memory",
    },
}

_TASKS = {
    "zh": {
        "director": "请为本章制定创作计划：核心主题、情感基调、必须出现的关键事件（按顺序）、"
        "节奏安排和结尾钩子。",
        "plot": "请根据创作计划设计本章的情节节拍（按顺序）、核心冲突和高潮转折。",
        "character": "请设计每个人物在本章的行动、情绪与变化，以及他们说话的方式和示例对白。",
        "scene": "请设计本章的场景：时间地点、氛围，以及可用的视觉、听觉、嗅觉等感官细节。",
        "synthesis": "请根据以上计划和设计，写出本章完整的正文。只输出正文，不要标题以外的任何说明。",
        "optimize": "请润色下面的章节草稿：保持情节和人物不变，改进语言的流畅与表现力，保持篇幅。"
        "只输出润色后的完整正文。",
        "quality": "请审核下面的章节：按连贯性、人物一致性、情节完成度和文笔给出 0 到 100 的总分，"
        "列出需要修改的具体问题，并用两三句话概括本章内容。",
        "revise": "请根据审核意见修改下面的章节，解决所列问题，保持篇幅。只输出修改后的完整正文。",
        "continue": "下面的章节篇幅不足。请从正文结尾处直接续写，保持人物、情节和文风一致，不要重复已写内容。"
        "只输出续写的正文。",
        "judge": "请比较版本A和版本B：哪一个更好地完成了本章大纲和创作计划，情节更完整、人物更鲜明、"
        "文笔更好？选出更好的一个并说明理由。",
    },
    "en": {
        "director": "Plan this chapter: its theme, tone, the key events it must contain (in order), "
        "its pacing and the hook it ends on.",
        "plot": "Following the plan, lay out the chapter's plot beats in order, its central conflict "
        "and its climax.",
        "character": "Describe how each character acts, feels and changes in this chapter, how they speak, "
        "with sample lines.",
        "scene": "Design the chapter's setting: time and place, atmosphere, and sensory details to use.",
        "synthesis": "Using the plan and designs above, write the complete chapter. Output only the chapter "
        "text (a title line is fine), no commentary.",
        "optimize": "Polish the draft below: keep the plot and characters, improve flow and vividness, keep "
        "the length. Output only the full polished chapter.",
        "quality": "Review the chapter below: give one score from 0 to 100 for coherence, character "
        "consistency, plot completion and prose; list concrete problems to fix; summarize the chapter "
        "in two or three sentences.",
        "revise": "Revise the chapter below to fix the listed problems, keeping its length. Output only the "
        "full revised chapter.",
        "continue": "The chapter below is too short. Continue it from exactly where it stops, keeping the "
        "characters, plot and style; do not repeat what is written. Output only the continuation.",
        "judge": "Compare version A and version B: which better fulfils the chapter outline and the plan, "
        "with a more complete plot, more vivid characters and better prose? Pick the better one and say why.",
    },
}

_LABELS = {
    "zh": {
        "overall": "全书大纲",
        "chapter": "本章大纲",
        "genre": "类型",
        "style": "文风",
        "characters": "人物",
        "previous": "前情提要",
        "plan": "创作计划",
        "plot": "情节设计",
        "character": "人物设计",
        "scene": "场景设计",
        "hint": "本版本的风格侧重",
        "draft": "章节草稿",
        "text": "章节正文",
        "issues": "审核意见",
        "a": "版本A",
        "b": "版本B",
        "length": "目标字数：{n}",
        "json": "请只输出一个符合以下 JSON Schema 的 JSON 对象：",
        "strict": "上一次的回答无法解析。请严格只输出一个符合上面 JSON Schema 的 JSON 对象，"
        "使用双引号，不要任何解释或多余文字。",
    },
    "en": {
        "overall": "Book outline",
        "chapter": "Chapter outline",
        "genre": "Genre",
        "style": "Style",
        "characters": "Characters",
        "previous": "Previously",
        "plan": "Plan",
        "plot": "Plot design",
        "character": "Character design",
        "scene": "Scene design",
        "hint": "This version's stylistic emphasis",
        "draft": "Draft",
        "text": "Chapter",
        "issues": "Review notes",
        "a": "Version A",
        "b": "Version B",
        "length": "Target length: {n} words",
        "json": "Answer with only one JSON object that follows this JSON Schema:",
        "strict": "Your last answer could not be parsed. Output only one JSON object that follows the JSON "
        "Schema above, with double quotes and nothing else.",
    },
}

# The schemas' descriptions in Chinese, so a Chinese prompt stays Chinese end to end.
_ZH_DESCRIPTIONS = {
    "theme": "本章的核心主题",
    "tone": "情感基调",
    "key_events": "本章必须出现的关键事件，按顺序",
    "pacing": "节奏安排",
    "ending_hook": "结尾钩子",
    "beats": "情节节拍，按顺序",
    "conflict": "核心冲突",
    "climax": "高潮或转折",
    "performances": "每个人物一行：行动、情绪、变化",
    "dialogue_tips": "说话方式与示例对白",
    "setting": "时间与地点",
    "atmosphere": "氛围",
    "sensory_details": "感官细节",
    "score": "0 到 100 的总分",
    "issues": "需要修改的具体问题，没有则为空",
    "summary": "两三句话的本章概要",
    "winner": "更好的版本：A 或 B",
    "reasons": "理由",
}


def style_hint(language: str, index: int) -> str:
    """The style hint of version `index` (0-based); hints repeat after ten versions."""
    hints = STYLE_HINTS[language]
    return hints[index % len(hints)]


@functools.cache  # pydantic builds a schema in ~1 ms; a chapter asks for one a dozen times
def _schema_text(model: type[BaseModel], language: str) -> str:
    schema = prompt_schema(model)
    schema.pop("description", None)
    if language == "zh":
        for name, prop in schema.get("properties", {}).items():
            if name in _ZH_DESCRIPTIONS:
                prop["description"] = _ZH_DESCRIPTIONS[name]
    return json.dumps(schema, ensure_ascii=False)


def brief(inp: NovelInput, previous_summary: str | None = None) -> str:
    """The story facts every agent sees."""
    lab = _LABELS[inp.language]
    sep = "：" if inp.language == "zh" else ": "
    lines: list[str] = []
    if inp.overall_outline:
        lines.append(f"{lab['overall']}{sep}{inp.overall_outline}")
    lines.append(f"{lab['chapter']}{sep}{inp.chapter_outline}")
    if inp.genre:
        lines.append(f"{lab['genre']}{sep}{inp.genre}")
    if inp.style:
        lines.append(f"{lab['style']}{sep}{inp.style}")
    if inp.characters:
        joiner = "、" if inp.language == "zh" else ", "
        lines.append(f"{lab['characters']}{sep}{joiner.join(c.name for c in inp.characters)}")
        for c in inp.characters:
            details = [d for d in (c.role, joiner.join(c.traits), c.background, c.goals) if d]
            detail_sep = "；" if inp.language == "zh" else "; "
            lines.append(f"- {c.name}" + (f"{sep}{detail_sep.join(details)}" if details else ""))
    if previous_summary:
        lines.append(f"{lab['previous']}{sep}{previous_summary}")
    return "\n".join(lines)


# Field names as a Chinese prompt shows them.
_ZH_KEYS = {
    "theme": "主题",
    "tone": "基调",
    "key_events": "关键事件",
    "pacing": "节奏",
    "ending_hook": "结尾钩子",
    "beats": "情节节拍",
    "conflict": "冲突",
    "climax": "高潮",
    "performances": "人物表现",
    "dialogue_tips": "对白",
    "setting": "时间地点",
    "atmosphere": "氛围",
    "sensory_details": "感官细节",
}


def render_section(value: Any, language: str = "en") -> str:
    """An upstream agent's output as readable lines (not JSON, which would confuse the schema fence)."""
    if isinstance(value, Mapping):
        parts = []
        sep = "：" if language == "zh" else ": "
        for key, item in value.items():
            label = _ZH_KEYS.get(key, key) if language == "zh" else key.replace("_", " ")
            if isinstance(item, list):
                parts.append(f"{label}{sep}\n" + "\n".join(f"  - {x}" for x in item))
            elif item not in (None, ""):
                parts.append(f"{label}{sep}{item}")
        return "\n".join(parts)
    return str(value)


def _sections(language: str, sections: Mapping[str, Any]) -> str:
    lab = _LABELS[language]
    out = []
    for key, value in sections.items():
        if value is None or value == "" or value == {}:
            continue
        text = value if isinstance(value, str) else render_section(value, language)
        out.append(f"【{lab[key]}】\n{text}" if language == "zh" else f"## {lab[key]}\n{text}")
    return "\n\n".join(out)


# No "角色：" / "Characters:" label here: the simulator (and readers) take what follows one for a name.
_ROLE_LINE = {"zh": "现在请你作为{role}完成以下任务。", "en": "Now work as the {role}."}


def shared_part(inp: NovelInput, previous_summary: str | None, plan: Any = None) -> str:
    """What every agent of one chapter sees, byte for byte the same: the brief, the book's context
    pack, and (once the director has made it) the plan. It goes first, so it is a cached prefix."""
    lang = inp.language
    parts = [brief(inp, previous_summary)]
    if inp.book_context:
        parts.append(inp.book_context)
    if plan:
        parts.append(_sections(lang, {"plan": plan}))
    return "\n\n".join(p for p in parts if p)


def role_line(agent: str, language: str) -> str:
    """The agent's role, said after the shared part (never before it: it differs per agent)."""
    return _ROLE_LINE[language].format(role=_ROLES[language][agent])


def _layout(agent: str, inp: NovelInput, shared: str, body: str) -> list[Message]:
    return layout(inp.language, shared, f"{role_line(agent, inp.language)}\n\n{body}")


def json_messages(
    agent: str,
    inp: NovelInput,
    sections: Mapping[str, Any],
    schema_model: type[BaseModel],
    *,
    previous_summary: str | None = None,
) -> list[Message]:
    """A structured agent's prompt: the chapter's shared part first (brief, book context, plan), then
    the agent's role, its own inputs, the task, and the schema fence (last)."""
    lang = inp.language
    schema = _schema_text(schema_model, lang)
    own = {k: v for k, v in sections.items() if k != "plan"}
    body = "\n\n".join(
        p
        for p in (
            _sections(lang, own),
            _TASKS[lang][agent],
            f"{_LABELS[lang]['json']}\n```json\n{schema}\n```",
        )
        if p
    )
    return _layout(agent, inp, shared_part(inp, previous_summary, sections.get("plan")), body)


def text_messages(
    agent: str,
    inp: NovelInput,
    sections: Mapping[str, Any],
    *,
    target_length: int,
    previous_summary: str | None = None,
) -> list[Message]:
    """A prose agent's prompt: the shared part, then its role, inputs, task and the target length."""
    lang = inp.language
    own = {k: v for k, v in sections.items() if k != "plan"}
    body = "\n\n".join(
        p
        for p in (
            _sections(lang, own),
            _TASKS[lang][agent],
            _LABELS[lang]["length"].format(n=target_length),
        )
        if p
    )
    return _layout(agent, inp, shared_part(inp, previous_summary, sections.get("plan")), body)


def stricter(messages: list[Message], language: str) -> list[Message]:
    """The same prompt plus a firm "JSON only" note, for the one retry after a parse failure."""
    return [*messages, {"role": "user", "content": _LABELS[language]["strict"]}]
