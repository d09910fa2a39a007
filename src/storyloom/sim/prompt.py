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
    r"[\u4e00-\u9fff]{1,4}?(?:城|镇|村|山|谷|宫|殿|楼|府|岛|国|州|湖|江|河|峰|阁|寺|林|港|街|学院|门派|宗|秘境|禁地|洞府)"
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
_ZH_FUNCTION = re.compile(r"[在的了到从和与去往于是向把被为过入进自]")
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
    system = "\n".join(message_text(m) for m in messages if _is_system(m))
    rest = "\n".join(message_text(m) for m in messages if not _is_system(m))
    fmt_schema = _schema_from_format(response_format)
    key = json.dumps(fmt_schema, sort_keys=True) if fmt_schema is not None else ""
    return _analyse_cached(system, rest, key)


def _is_system(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") in ("system", "developer")


def _clip(text: str) -> str:
    if len(text) > _MAX_SCAN_CHARS:  # the start (names, outline) and the end (the ask) matter most
        half = _MAX_SCAN_CHARS // 2
        return text[:half] + "\n" + text[-half:]
    return text


@functools.lru_cache(maxsize=512)
def _analyse_cached(system: str, rest: str, fmt_schema_json: str) -> PromptFacts:
    full = f"{system}\n{rest}" if system else rest
    prose = _clip(_FENCE.sub(" ", full))
    language = _language(prose)
    # Story material comes only from the content of non-system messages: never from section labels,
    # role descriptions, or instructions about style, length and format.
    segments = _segments(_clip(_FENCE.sub(" ", rest)))
    story = [t for k, t in segments if k in ("outline", "content")]
    places = _places(story, language) if language == "en" else []
    names = _names(prose, full, language, segments, set(places))
    if language == "zh":
        places = _places(story, language, names)
    return PromptFacts(
        language=language,
        names=tuple(names),
        places=tuple(p for p in places if p not in names),
        phrases=tuple(p for p in _phrases(segments, language) if not _only_names(p, names)),
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


# Section structure: "【label】" / "## label" headers and "label: value" lines. Labels are never
# content; a label's kind says whether its text may feed the story (outline first, style never).
_HEADER = re.compile(r"^\s*(?:【([^】\n]{1,30})】|#{1,6}\s*([^\n]{1,60}))\s*$")
_LINE_LABEL = re.compile(r"^\s*(?:[-*]\s*)?([^：:\n\"“”]{1,20})[：:]\s*(.*)$")
_OUTLINE_LABEL = re.compile(
    r"大纲|前情|梗概|概要|关键事件|情节|节拍|冲突|高潮|钩子|剧情|outline|previously|synopsis|summary|premise"
    r"|key events|beats|conflict|climax|hook|plot",
    re.I,
)
_SKIP_LABEL = re.compile(
    r"风格|文风|侧重|类型|字数|格式|要求|基调|节奏|氛围|主题|对白|感官|审核|意见|任务|说明|输出|注意"
    r"|style|stylistic|emphasis|genre|length|format|tone|pacing|atmosphere|theme|dialogue|sensory"
    r"|review|notes|issues|instruction|task|requirement|constraint|schema",
    re.I,
)
_DRAFT_LABEL = re.compile(r"草稿|正文|版本|draft|chapter$|version|text", re.I)
_ZH_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖萧田董袁潘蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔"
    "向汤楚云慕凌燕柳墨宁温纪洛谷岳易霍聂卓韩商花"
)
_ZH_COMPOUND = re.compile(
    r"欧阳|上官|司马|诸葛|慕容|东方|南宫|独孤|令狐"
    r"|皇甫|公孙|长孙|宇文|夏侯|轩辕|西门|司徒"
)
_ZH_BOUNDARY = frozenset(
    "在的了到从和与去往于是向把被为也却就都已曾正说道便又将对"
    "因而并着过得地之所等中里上下还吗呢吧啊呀问喊叫答早"
)
_ZH_DESCRIPTOR = re.compile(
    r"(?:少年|少女|主角|主人公|青年|名叫|叫做|名为|男孩|女孩|姑娘|公子|少侠|书生|剑客|弟子|孤儿|侦探|女侠"
    r"|男子|女子|老人|师兄|师姐|师弟|师妹)(?:是|叫)?"
)
_ZH_NAME_CONTEXT = frozenset("说道笑看点的和与在，。“”是把被也却忽终心低抬转握攥站望深沉犹警坚释不")
_ZH_NOT_NAMES = frozenset(
    {"白色", "黄色", "金色", "高手", "方向", "江湖", "林中", "云中", "石头", "万一", "向前"}
    | {"白天", "黄昏", "高兴", "温柔", "钟声", "宁静", "夏天", "龙门", "方才", "云端"}
)
_EN_STOP |= {
    "English", "Chinese", "Schema", "Version", "Review", "Notes", "Previously", "Genre", "Plan", "Design",
    "Theme", "Tone", "Pacing", "Setting", "Atmosphere", "Beats", "Conflict", "Climax", "Draft", "Nobody",
    "Someone", "Everyone", "Footsteps", "Long", "Rain", "Beyond", "Somewhere", "Once", "Later", "Soon",
    "Suddenly", "Meanwhile", "Finally", "Still", "Yet", "Even", "Just", "Some", "Many", "Several", "Another",
    "Dawn", "Night", "Morning", "Evening", "Key", "Events", "Hook", "Ending", "Sensory", "Details",
}  # fmt: skip
_EN_PLACE_PREP = re.compile(r"\b(?:in|at|from|near|inside|of|into|through|across)\s+(?:the\s+)?$")
_EN_APPOSITIVE = re.compile(r",\s+(?:a|an|the)\s")
_EN_NAMED = re.compile(r"\b(?:named|called)\s+$")
_CONNECTIVE = re.compile(r"^(?:却也因此|却也|也因此|因此|于是|然而|但是|可是|而且|并且|随后|却|但|也|而|并)")


def _label_kind(label: str) -> str:
    if _SKIP_LABEL.search(label):
        return "skip"
    if _OUTLINE_LABEL.search(label):
        return "outline"
    if _DRAFT_LABEL.search(label):
        return "draft"
    return "content"


@functools.lru_cache(maxsize=256)
def _segments(text: str) -> list[tuple[str, str]]:
    """(kind, text) for each content line: kind is outline, content, draft or skip; labels dropped."""
    out: list[tuple[str, str]] = []
    section = "content"
    field = ""
    for line in text.splitlines():
        if not line.strip():
            field = ""
            continue
        header = _HEADER.match(line)
        if header:
            section = _label_kind(header.group(1) or header.group(2) or "")
            field = ""
            continue
        m = _LINE_LABEL.match(line)
        if m and not _looks_like_speech(m.group(1)):
            kind = _label_kind(m.group(1))
            field = kind if kind != "content" or section == "content" else section
            if section in ("skip", "draft") and kind == "content":
                field = section
            if m.group(2).strip():
                out.append((field, m.group(2)))
            continue
        out.append((field or section, line))
    return out


def _looks_like_speech(label: str) -> bool:
    """A speech tag ("林远说：…") or a whole sentence before a colon is content, not a label."""
    return label.endswith(("说", "道", "问", "喊", "said", "asked")) or len(label.split()) > 4


def _names(
    prose: str, full: str, language: str, segments: list[tuple[str, str]], places: set[str]
) -> list[str]:
    found = list(_JSON_NAME.findall(full[:_MAX_SCAN_CHARS]))
    label = _ZH_LABEL if language == "zh" else _EN_LABEL
    token = _ZH_NAME_TOKEN if language == "zh" else _EN_NAME_TOKEN
    for m in label.finditer(prose):
        for part in _SPLIT_NAMES.split(m.group(1)):
            part = _PAREN_TAIL.sub("", part).strip()
            hit = token.fullmatch(part) or token.match(part)
            if hit:
                found.append(hit.group(0))
    if language == "zh":
        found += _zh_names(segments)
    else:
        found += _en_names(segments, places, bool(found))
    stop = _ZH_STOP if language == "zh" else _EN_STOP
    return _dedupe((n for n in found if n not in stop), 8)


def _zh_name_at(text: str, i: int) -> str:
    """The Chinese name starting at `i` (surname + one or two characters), or ""."""
    compound = _ZH_COMPOUND.match(text, i)
    start = compound.end() if compound else i + 1
    if not compound and (i >= len(text) or text[i] not in _ZH_SURNAMES):
        return ""

    def cjk(j: int) -> bool:
        return j < len(text) and "\u4e00" <= text[j] <= "\u9fff"

    if not cjk(start) or text[start] in _ZH_BOUNDARY:
        return ""
    end = start + 1
    if cjk(end) and text[end] not in _ZH_BOUNDARY and (not cjk(end + 1) or text[end + 1] in _ZH_BOUNDARY):
        end += 1
    return text[i:end]


def _zh_names(segments: list[tuple[str, str]]) -> list[str]:
    """Names after descriptors ("少年林风") in the outline first, then names that recur in context."""
    strong: list[str] = []
    counts: dict[str, int] = {}
    for kind, text in segments:
        if kind == "skip":
            continue
        for m in _ZH_DESCRIPTOR.finditer(text):
            name = _zh_name_at(text, m.end())
            if name:
                strong.append(name)
        for i, ch in enumerate(text):
            if ch in _ZH_SURNAMES:
                name = _zh_name_at(text, i)
                after = text[i + len(name) : i + len(name) + 1]
                if name and len(name) >= 2 and (not after or after in _ZH_NAME_CONTEXT):
                    counts[name] = counts.get(name, 0) + 1
    recurring = [n for n, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= 2]
    return strong + [n for n in recurring if n not in _ZH_NOT_NAMES and not _ZH_PLACE.fullmatch(n)]


def _en_names(segments: list[tuple[str, str]], places: set[str], listed: bool) -> list[str]:
    """Capitalised words that are not sentence-initial stopwords; the outline's may be sentence-initial."""
    strong: list[str] = []
    counts: dict[str, int] = {}
    initial: dict[str, int] = {}
    for kind, text in segments:
        if kind == "skip":
            continue
        for m in _EN_NAME_TOKEN.finditer(text):
            word = m.group(0)
            if word.split()[0] in _EN_STOP or word in places:
                continue
            before = text[: m.start()]
            if _EN_PLACE_PREP.search(before[-20:]):
                continue
            tail = before.rstrip(" \t-*")
            if _EN_NAMED.search(before[-10:]) or (kind == "outline" and _EN_APPOSITIVE.match(text, m.end())):
                strong.append(word)
            elif not tail or tail[-1] in '.!?"“”:;(':
                if kind in ("outline", "content"):
                    initial[word] = initial.get(word, 0) + 1
            else:
                counts[word] = counts.get(word, 0) + (2 if kind == "outline" else 1)
    names = [w for w, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= 2 or w in initial]
    lone = not (listed or strong or names)  # a sentence-initial word alone is a name only as a last resort
    names += [w for w in initial if w not in names and (w in counts or (lone and initial[w] >= 1))][:2]
    return strong + names


def _places(texts: list[str], language: str, names: list[str] | None = None) -> list[str]:
    found: list[str] = []
    for text in texts:
        if language == "zh":  # keep what follows a function word: "远在青石镇" -> "青石镇"
            for m in _ZH_PLACE.finditer(text):
                place = _ZH_FUNCTION.split(m.group(0))[-1]
                start = m.end() - len(place)
                if len(place) < 2 or _ZH_DESCRIPTOR.match(place):
                    continue
                window = text[max(0, start - 3) : m.end() + 3]  # never a fragment of a name
                if names and any(_overlaps(window, n, start - max(0, start - 3), len(place)) for n in names):
                    continue
                found.append(place)
        else:
            found += (m.group(1) for m in _EN_PLACE.finditer(text) if m.group(1).split()[0] not in _EN_STOP)
    return _dedupe(found, 6)


def _overlaps(window: str, name: str, start: int, length: int) -> bool:
    i = window.find(name)
    while i >= 0:
        if i < start + length and i + len(name) > start:
            return True
        i = window.find(name, i + 1)
    return False


def _only_names(phrase: str, names: list[str]) -> bool:
    """True for a clause that merely lists characters ("林远、苏晚"), which reads badly as an event."""
    rest = phrase
    for name in names:
        rest = rest.replace(name, "")
    return not _SPLIT_NAMES.sub("", rest).strip(" ,.，。")


def _phrases(segments: list[tuple[str, str]], language: str) -> list[str]:
    """Short clauses to weave into the story as events: the outline's first, other content after;
    never labels, style hints or instructions."""
    found: list[str] = []
    for tier in (("outline",), ("content",), ("draft",)):
        if found:
            break
        text = "\n".join(t for k, t in segments if k in tier)
        found += _dedupe((p for p in _clauses(text, language) if p), 12)
    return _dedupe(found, 12)


def _clauses(text: str, language: str) -> Iterator[str]:
    zh = language == "zh"
    for m in (_ZH_CLAUSE if zh else _EN_CLAUSE).finditer(text):
        p = _LABEL_PREFIX.sub("", m.group(0).strip(" -*#\t")).strip().rstrip(",")
        if zh:
            p = _CONNECTIVE.sub("", p)
            ok = 4 <= len(p) <= 24 and not _ZH_NOISE.search(p) and not _ZH_INSTRUCTION.search(p)
        else:
            ok = 3 <= len(p.split()) <= 14 and not _EN_NOISE.search(p) and not _EN_INSTRUCTION.search(p)
        if ok and "【" not in p and "】" not in p:
            yield p
