"""What the simulator reads from a request's messages: language, names, places, phrases, length, schema.

Recognised target-length phrasings (the last match in the messages wins; "words" for English,
Chinese characters for Chinese):

    target length: 1200 words     target length: 800 tokens     about / around / approximately 900 words
    目标字数：3000    字数：3000    约3000字    3000字左右

The JSON schema an agent asks for is the last ```json fenced block that parses to an object with
"properties" (see docs/CONTRACTS.md), or `response_format.json_schema.schema` when present.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PromptFacts", "TargetLength", "analyse", "message_text"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_CJK = re.compile(r"[\u3400-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")

_LENGTH_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"target length\s*[:=]?\s*(\d{1,6})\s*(words?|tokens?|characters?|字)?", re.I), "auto"),
    (re.compile(r"(?:about|around|approximately)\s+(\d{1,6})\s+words", re.I), "words"),
    (re.compile(r"目标字数\s*[:：]?\s*(\d{1,6})"), "chars"),
    (re.compile(r"(?<!目标)字数\s*[:：]\s*(\d{1,6})"), "chars"),
    (re.compile(r"约\s*(\d{1,6})\s*字"), "chars"),
    (re.compile(r"(\d{1,6})\s*字左右"), "chars"),
)

# Names: "name": "X" in embedded JSON, and list-like lines after a label.
_JSON_NAME = re.compile(r'"name"\s*:\s*"([^"\n]{1,24})"')
_ZH_LABEL = re.compile(r"(?:主角|角色|人物|配角|反派|姓名|名字)\s*[:：]\s*([^\n。；;]{1,80})")
_EN_LABEL = re.compile(
    r"(?:characters?|protagonists?|cast|heroes?|villains?)\s*[:：]\s*([^\n.;]{1,120})", re.I
)
_ZH_NAME_TOKEN = re.compile(r"[\u4e00-\u9fff]{2,4}")
_EN_NAME_TOKEN = re.compile(r"\b[A-Z][a-z]{2,14}(?:\s[A-Z][a-z]{2,14})?\b")
_ZH_PLACE = re.compile(
    r"[\u4e00-\u9fff]{1,4}?(?:城|镇|村|山|谷|宫|殿|楼|府|岛|国|州|湖|江|河|峰|阁|寺|林|港|街|学院|门派|宗)"
)
_EN_PLACE = re.compile(r"\b(?:in|at|to|from|near|inside)\s+(?:the\s+)?([A-Z][a-z]+(?:\s[A-Z][a-z]+)?)")
_EN_STOP = {
    "The", "This", "That", "There", "Then", "When", "While", "After", "Before", "Write", "Return", "Chapter",
    "You", "Your", "Use", "Keep", "Make", "Give", "Output", "Answer", "Please", "Only", "Each", "Every",
    "JSON", "Plot", "Scene", "Style", "Genre", "Outline", "Characters", "Character", "Target", "Length",
    "And", "But", "For", "With", "From", "Into", "Here", "What", "Who", "How", "Why", "Its", "His", "Her",
    "They", "She", "Our", "One", "All", "Not", "Now", "Book", "Story", "Title", "Draft", "Summary",
}  # fmt: skip
_ZH_STOP = {"主角", "角色", "人物", "名字", "章节", "大纲", "风格", "类型", "要求", "目标", "字数", "输出"}
_MAX_SCAN_CHARS = 16_000
_PAREN_TAIL = re.compile(r"[（(].*")
_ZH_CLAUSE = re.compile(r"[^。！？；\n，,]+")
_EN_CLAUSE = re.compile(r"[^.!?;\n]+")
_ZH_NOISE = re.compile(r"[A-Za-z{}\"]")
_EN_NOISE = re.compile(r"[{}\"<>]")
_ZH_FUNCTION = re.compile(r"[在的了到从和与去往于是向把被为]")
_LABEL_PREFIX = re.compile(r"^[^：:]{1,16}[：:]\s*")
_ZH_INSTRUCTION = re.compile(r"请|输出|返回|要求|生成|字数|格式|你是|撰写|写作")
_EN_INSTRUCTION = re.compile(
    r"\b(?:write|return|respond|output|json|schema|answer|you|your|please|must|should|format)\b", re.I
)
_SPLIT_NAMES = re.compile(r"[、，,/;；\s]+|\s+and\s+|和|与")


@dataclass(frozen=True, slots=True)
class TargetLength:
    amount: int
    unit: Literal["words", "chars", "tokens"]


@dataclass(frozen=True, slots=True)
class PromptFacts:
    """The pieces of a prompt the generators build with (shared through a cache: never mutate)."""

    language: Literal["zh", "en"]
    names: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    target: TargetLength | None = None
    schema: dict[str, Any] | None = None


def message_text(message: Any) -> str:
    """The text of one message; content may be a string or a list of OpenAI content parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def analyse(messages: list[Any], response_format: Any = None) -> PromptFacts:
    """Read language, names, places, outline phrases, target length and JSON schema from a request.

    Cached by the request's text: a benchmark sends the same prompts many times, and a long prompt
    costs milliseconds to scan, which would delay every stream behind it on the event loop.
    """
    full = "\n".join(message_text(m) for m in messages)
    fmt_schema = _schema_from_format(response_format)
    key = json.dumps(fmt_schema, sort_keys=True) if fmt_schema is not None else ""
    return _analyse_cached(full, key)


@functools.lru_cache(maxsize=512)
def _analyse_cached(full: str, fmt_schema_json: str) -> PromptFacts:
    prose = _FENCE.sub(" ", full)
    if len(prose) > _MAX_SCAN_CHARS:  # the start (names, outline) and the end (the ask) matter most
        half = _MAX_SCAN_CHARS // 2
        prose = prose[:half] + "\n" + prose[-half:]
    language = _language(prose)
    names = _names(prose, full, language)
    return PromptFacts(
        language=language,
        names=tuple(names),
        places=tuple(_places(prose, language, set(names))),
        phrases=tuple(p for p in _phrases(prose, language) if not _only_names(p, names)),
        target=_target_length(prose),
        schema=json.loads(fmt_schema_json) if fmt_schema_json else _schema_from_fences(full),
    )


def _language(text: str) -> Literal["zh", "en"]:
    cjk = len(_CJK.findall(text))
    words = len(_LATIN_WORD.findall(text))
    return "zh" if cjk > 0 and cjk >= words else "en"


def _schema_from_format(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    js = response_format.get("json_schema")
    if isinstance(js, dict):
        schema = js.get("schema")
        if isinstance(schema, dict):
            return schema
    return None


def _schema_from_fences(text: str) -> dict[str, Any] | None:
    for block in reversed(_FENCE.findall(text)):
        try:
            parsed = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and "properties" in parsed:
            return parsed
    return None


def _target_length(text: str) -> TargetLength | None:
    best: tuple[int, TargetLength] | None = None
    for pattern, unit in _LENGTH_PATTERNS:
        for m in pattern.finditer(text):
            amount = int(m.group(1))
            if amount <= 0:
                continue
            resolved = unit
            if unit == "auto":
                word = (m.group(2) or "").lower()
                if word.startswith("token"):
                    resolved = "tokens"
                elif word.startswith("char") or word == "字":
                    resolved = "chars"
                else:
                    resolved = "words"
            found = TargetLength(amount, resolved)  # type: ignore[arg-type]
            if best is None or m.start() >= best[0]:
                best = (m.start(), found)
    return best[1] if best else None


def _dedupe(items: Iterable[str], limit: int) -> list[str]:
    """The first `limit` distinct non-empty items; stops consuming `items` once it has them."""
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip().strip("\"'“”「」")
        if item and item not in seen:
            seen[item] = None
            if len(seen) >= limit:
                break
    return list(seen)


def _names(prose: str, full: str, language: str) -> list[str]:
    found = list(_JSON_NAME.findall(full[:_MAX_SCAN_CHARS]))
    label = _ZH_LABEL if language == "zh" else _EN_LABEL
    token = _ZH_NAME_TOKEN if language == "zh" else _EN_NAME_TOKEN
    for m in label.finditer(prose):
        for part in _SPLIT_NAMES.split(m.group(1)):
            part = _PAREN_TAIL.sub("", part).strip()
            hit = token.fullmatch(part) or token.match(part)
            if hit:
                found.append(hit.group(0))
    if language == "en" and len(found) < 2:
        counts: dict[str, int] = {}
        for w in _EN_NAME_TOKEN.findall(prose):
            if w.split()[0] not in _EN_STOP:
                counts[w] = counts.get(w, 0) + 1
        found += [w for w, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= 2]
    stop = _ZH_STOP if language == "zh" else _EN_STOP
    return _dedupe((n for n in found if n not in stop), 8)


def _places(text: str, language: str, names: set[str]) -> list[str]:
    if language == "zh":  # keep what follows a function word: "远在青石镇" -> "青石镇"
        found = (_ZH_FUNCTION.split(m.group(0))[-1] for m in _ZH_PLACE.finditer(text))
        found = (p for p in found if len(p) >= 2 and not any(n in p for n in names))
    else:
        found = (m.group(1) for m in _EN_PLACE.finditer(text) if m.group(1).split()[0] not in _EN_STOP)
    return _dedupe((p for p in found if p not in names), 6)


def _only_names(phrase: str, names: list[str]) -> bool:
    """True for a clause that merely lists characters ("林远、苏晚"), which reads badly as an event."""
    rest = phrase
    for name in names:
        rest = rest.replace(name, "")
    return not _SPLIT_NAMES.sub("", rest).strip(" ,.，。")


def _phrases(text: str, language: str) -> list[str]:
    """Short clauses of the outline-like lines, to weave into the story as events."""
    return _dedupe((p for p in _clauses(text, language) if p), 12)


def _clauses(text: str, language: str) -> Iterator[str]:
    zh = language == "zh"
    for m in (_ZH_CLAUSE if zh else _EN_CLAUSE).finditer(text):
        p = _LABEL_PREFIX.sub("", m.group(0).strip(" -*#\t")).strip().rstrip(",")
        if zh:
            ok = 4 <= len(p) <= 24 and not _ZH_NOISE.search(p) and not _ZH_INSTRUCTION.search(p)
        else:
            ok = 3 <= len(p.split()) <= 14 and not _EN_NOISE.search(p) and not _EN_INSTRUCTION.search(p)
        if ok:
            yield p
