"""Story-like text from templates filled with the prompt's names, places and outline phrases.

Cheap by design (a few microseconds a sentence): the simulator serves hundreds of streams on two
cores, so text is assembled from fixed templates with a seeded RNG, never by a model.
"""

from __future__ import annotations

import functools
import random
import re
import zlib
from typing import Literal

from storyloom.llm.tokens import estimate_tokens
from storyloom.sim.prompt import PromptFacts

__all__ = ["Unit", "count_units", "sentence", "story_text", "truncate_to_tokens"]

Unit = Literal["words", "chars", "tokens"]

_ZH_NAMES = ("林远", "苏晚", "沈青", "陆明川", "顾念")
_ZH_PLACES = ("青石镇", "落霞山", "临江城", "旧码头", "藏书阁")
_ZH_THINGS = ("一封旧信", "半块玉佩", "褪色的地图", "一盏孤灯", "生锈的钥匙", "一枚铜钱")
_ZH_MOODS = ("沉默", "犹豫", "不安", "坚定", "警觉", "释然")
_ZH_TIMES = ("黄昏时分", "夜色渐深", "天刚蒙蒙亮", "雨停之后", "钟声响起时", "风起的时候")
_ZH_TEMPLATES = (
    "{time}，{a}独自来到{place}，{thing}在掌心里微微发烫。",
    "{a}看着{b}，{mood}地说：“我们已经没有退路了。”",
    "{b}没有回答，只是把{thing}推到{a}面前。",
    "{place}的风带着潮气，{a}忽然想起了{phrase}。",
    "谁也没有想到，{phrase}，这一切竟然发生在{place}。",
    "{a}深吸一口气，{mood}却清楚：{phrase}。",
    "远处传来脚步声，{b}压低声音：“有人跟着我们。”",
    "{time}，{place}里灯火摇曳，{a}和{b}各怀心事。",
    "{a}攥紧了{thing}，心里反复念着{b}临别时的那句话。",
    "“如果{phrase}，你会怎么做？”{b}问。",
    "{a}的目光越过{place}的屋檐，落在更远的黑暗里。",
    "这一刻，{a}终于明白，{phrase}并不是偶然。",
    "{b}笑了笑，笑意却没有到达眼底：“你以为{place}还是从前的{place}吗？”",
    "雨丝斜斜地落在{place}的石阶上，{a}数着自己的心跳。",
    "{a}把{thing}收进怀里，转身时衣角带起一阵冷风。",
    "“{a}，你还记得吗？”{b}的声音很轻，“那年在{place}。”",
    "没有人知道，{a}早在{time}就已经猜到了{phrase}。",
    "{b}的手指在桌面上轻轻敲着，一下，又一下。",
    "{place}安静得出奇，连虫鸣都停了。",
    "{a}{mood}地点了点头，却没有再说一个字。",
)
_EN_NAMES = ("Mara", "Elias", "Juno", "Tobin", "Selene")
_EN_PLACES = ("the harbor", "Ashford", "the old library", "the ridge road", "the lighthouse")
_EN_THINGS = ("a folded letter", "a brass key", "a faded map", "a cracked lantern", "a silver coin")
_EN_MOODS = ("quietly", "hesitantly", "with sudden resolve", "warily", "at last", "softly")
_EN_TIMES = ("At dusk", "Long after midnight", "Before the bells rang", "When the rain stopped", "By morning")
_EN_TEMPLATES = (
    "{time}, {a} walked alone into {place}, {thing} heavy in one pocket.",
    '{a} looked at {b} and said {mood}, "There is no way back now."',
    "{b} did not answer, only pushed {thing} across the table toward {a}.",
    "The wind off {place} smelled of salt, and {a} remembered that {phrase}.",
    "No one had expected it: {phrase}, and all of it in {place}.",
    "{a} took a slow breath and knew, {mood}, that {phrase}.",
    'Footsteps echoed somewhere behind them. "We are being followed," {b} whispered.',
    "{time}, the lamps of {place} flickered while {a} and {b} kept their own counsel.",
    "{a} closed a hand around {thing} and replayed the last thing {b} had said.",
    '"And if {phrase}, what would you do?" {b} asked.',
    "Beyond the roofs of {place}, {a} watched the dark gather and thicken.",
    "In that moment {a} understood that {phrase} had never been an accident.",
    '{b} smiled, but the smile never reached the eyes. "You think {place} is still what it was?"',
    "Rain slanted across the steps of {place}, and {a} counted every heartbeat.",
    "{a} tucked {thing} away and turned, letting the cold follow like a shadow.",
    '"{a}, do you remember?" {b} said softly. "That year, in {place}."',
    "Nobody knew that {a} had guessed it long before: {phrase}.",
    "{b} tapped a finger on the table, once, then again.",
    "{place} was strangely quiet; even the insects had stopped.",
    "{a} nodded {mood} and said nothing more.",
)
_ZH_PHRASES = ("真相就藏在旧案里", "约定终究要兑现", "每个人都有不能说的秘密")
_EN_PHRASES = ("the truth was buried in the old case", "every promise comes due", "everyone kept a secret")
_CJK = re.compile(r"[\u3400-\u9fff]")
_TOKEN_CJK = re.compile("[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")  # as in llm/tokens.py


def sentence(facts: PromptFacts, rng: random.Random) -> str:
    """One story sentence in the prompt's language, built from its names, places and phrases."""
    return _sentence(facts, rng, "")[0]


def _sentence(facts: PromptFacts, rng: random.Random, last: str) -> tuple[str, str]:
    """(sentence, template used); avoids repeating the template `last`."""
    zh = facts.language == "zh"
    names = _cast(facts.names, zh)
    # The prompt's first name is the protagonist: in half the sentences, and always in the cast.
    a = names[0] if facts.names and rng.random() < 0.5 else rng.choice(names)
    others = [n for n in names if n != a]
    template = rng.choice(_ZH_TEMPLATES if zh else _EN_TEMPLATES)
    if template == last:  # never the same shape twice in a row
        template = rng.choice(_ZH_TEMPLATES if zh else _EN_TEMPLATES)
    phrase = rng.choice(facts.phrases or list(_ZH_PHRASES if zh else _EN_PHRASES))
    if not zh and phrase[:1].isupper() and phrase.split()[0].strip(",;:") not in names:
        phrase = phrase[0].lower() + phrase[1:]
    text = template.format(
        a=a,
        b=rng.choice(others),
        place=rng.choice(facts.places or list(_ZH_PLACES if zh else _EN_PLACES)),
        thing=rng.choice(_ZH_THINGS if zh else _EN_THINGS),
        mood=rng.choice(_ZH_MOODS if zh else _EN_MOODS),
        time=rng.choice(_ZH_TIMES if zh else _EN_TIMES),
        phrase=phrase,
    )
    return text, template


@functools.lru_cache(maxsize=256)
def _cast(names: tuple[str, ...], zh: bool) -> tuple[str, ...]:
    """The prompt's names, with pool names filling secondary roles up to three (stable per protagonist)."""
    pool = _ZH_NAMES if zh else _EN_NAMES
    if not names:
        return pool
    start = zlib.crc32(names[0].encode()) % len(pool)
    cast = list(names)
    for n in pool[start:] + pool[:start]:
        if len(cast) >= 3:
            break
        if not any(n in m or m in n for m in cast):
            cast.append(n)
    return tuple(cast)


def count_units(text: str, unit: Unit) -> int:
    """Length in the unit a target is stated in: English words, Chinese characters, or tokens."""
    if unit == "words":
        return len(text.split())
    if unit == "chars":
        return len(_CJK.findall(text)) or len(text)
    return estimate_tokens(text)


def story_text(
    facts: PromptFacts,
    rng: random.Random,
    amount: int,
    unit: Unit = "tokens",
) -> str:
    """Paragraphs of story until `amount` units are reached (may overshoot by one sentence)."""
    zh = facts.language == "zh"
    joiner = "" if zh else " "
    paragraphs: list[str] = []
    total = cjk_n = other_n = 0
    last = ""
    while total < amount:
        sentences: list[str] = []
        for _ in range(rng.randint(3, 6)):
            s, last = _sentence(facts, rng, last)
            sentences.append(s)
            if unit == "tokens":  # count like estimate_tokens on the whole text (no per-sentence rounding)
                other = len(_TOKEN_CJK.sub("", s)) + (0 if zh else 1)
                cjk_n += len(s) - other + (0 if zh else 1)
                other_n += other
                total = cjk_n + other_n // 4
            else:
                total += count_units(s, unit)
            if total >= amount:
                break
        paragraphs.append(("　　" if zh else "") + joiner.join(sentences))
    return "\n\n".join(paragraphs)


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` whose estimated token count is at most `max_tokens`."""
    if estimate_tokens(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # binary search: estimate_tokens is monotone in the prefix length
        mid = (lo + hi + 1) // 2
        if estimate_tokens(text[:mid]) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]
