"""Chapter length in the language's unit and LongWriter's length score.

zh counts CJK characters (plus any Latin words mixed in); en counts words. The score
(LongWriter, Bai et al. 2024) punishes overshooting less than undershooting:
S = 100·(1 − (l'/l − 1)/3) if l' > l, else 100·(1 − (l/l' − 1)/2), clamped to [0, 100].
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Fitted", "count_length", "fit_length", "length_score", "trim_to"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")


@functools.lru_cache(maxsize=256)
def count_length(text: str, language: str) -> int:
    """Characters for zh (CJK ideographs and Latin words), words for en.

    Cached: a version's final text is counted by the fit, the result, the quality measures and the
    slop score in turn, each a regex pass over a whole chapter (~2% of a worker at 200 chapter
    jobs); a string's hash is computed once and kept by the string."""
    words = len(_WORD.findall(text))
    if language == "zh":
        return len(_CJK.findall(text)) + words
    return words


def length_score(actual: int, target: int) -> float:
    """100 at the target, falling linearly; overshoot by 3x or undershoot to a third scores 0."""
    if target <= 0:
        raise ValueError("target length must be positive")
    if actual <= 0:
        return 0.0
    if actual > target:
        score = 100.0 * (1.0 - (actual / target - 1.0) / 3.0)
    else:
        score = 100.0 * (1.0 - (target / actual - 1.0) / 2.0)
    return round(max(0.0, min(100.0, score)), 2)


# -- length control ------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[。！？!?.…]+[”’\"」』)）]*")
_LOW, _HIGH = 0.9, 1.1
_CONTINUE_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class Fitted:
    text: str
    action: str | None  # "continued", "trimmed", "continued+trimmed" or None (already on target)
    length: int


def trim_to(text: str, limit: int, language: str) -> str:
    """The longest prefix ending at a sentence end whose length is at most `limit` (the text itself
    when no sentence end fits: a sentence is never cut)."""
    best = None
    for m in _SENTENCE_END.finditer(text):
        if count_length(text[: m.end()], language) > limit:
            break
        best = m.end()
    return text[:best].rstrip() if best else text


async def fit_length(call: Any, req: Any, text: str, plan: Any = None) -> Fitted:
    """Within target ±10%: continue a short text (the model writes the rest, at most twice), trim a
    long one at the last sentence end that fits. `call` is the version's metered `AgentCall`."""
    from storyloom.agents import ask_text
    from storyloom.apps.novel import prompts

    inp = req.input
    target, lang = inp.length_goal, inp.language
    actions: list[str] = []
    length = count_length(text, lang)
    for _ in range(_CONTINUE_ROUNDS):
        if length >= _LOW * target:
            break
        missing = max(50, target - length)
        sections = {"plan": plan, "text": text}
        messages = prompts.text_messages(
            "continue", inp, sections, target_length=missing, previous_summary=req.previous_summary
        )
        try:
            more = await ask_text(
                call, messages, max_tokens=int(missing * (1.0 if lang == "zh" else 1.4) * 2) + 256
            )
        except Exception as exc:  # a failed continuation keeps the text; the adherence reports it
            call.run.degraded = f"could not continue a short chapter: {type(exc).__name__}: {exc}"
            break
        if not more.strip():
            break
        text = f"{text.rstrip()}\n\n{more.strip()}"
        length = count_length(text, lang)
        if "continued" not in actions:
            actions.append("continued")
    if length > _HIGH * target:
        trimmed = trim_to(text, int(1.05 * target), lang)
        if count_length(trimmed, lang) < _LOW * target:
            trimmed = trim_to(text, int(_HIGH * target), lang)
        if trimmed != text:
            text, length = trimmed, count_length(trimmed, lang)
            actions.append("trimmed")
    return Fitted(text=text, action="+".join(actions) or None, length=length)
