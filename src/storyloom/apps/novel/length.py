"""Chapter length in the language's unit and LongWriter's length score.

zh counts CJK characters (plus any Latin words mixed in); en counts words. The score
(LongWriter, Bai et al. 2024) punishes overshooting less than undershooting:
S = 100·(1 − (l'/l − 1)/3) if l' > l, else 100·(1 − (l/l' − 1)/2), clamped to [0, 100].
"""

from __future__ import annotations

import re

__all__ = ["count_length", "length_score"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")


def count_length(text: str, language: str) -> int:
    """Characters for zh (CJK ideographs and Latin words), words for en."""
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
