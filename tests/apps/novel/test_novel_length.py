"""LongWriter's length score and how length is counted per language."""

from __future__ import annotations

import pytest

from storyloom.apps.novel.length import count_length, length_score


@pytest.mark.parametrize(
    ("actual", "target", "score"),
    [
        (1000, 1000, 100.0),
        (2000, 1000, 66.67),  # overshoot: 100 * (1 - 1/3)
        (4000, 1000, 0.0),  # 4x: clamped
        (500, 1000, 50.0),  # undershoot: 100 * (1 - 1/2)
        (333, 1000, 0.0),  # about a third: clamped at 0
        (0, 1000, 0.0),
        (1100, 1000, 96.67),
        (900, 1000, 94.44),
    ],
)
def test_length_score(actual: int, target: int, score: float) -> None:
    assert length_score(actual, target) == pytest.approx(score, abs=0.01)


def test_undershoot_is_punished_more_than_overshoot() -> None:
    assert length_score(800, 1000) < length_score(1200, 1000)


def test_target_must_be_positive() -> None:
    with pytest.raises(ValueError):
        length_score(10, 0)


def test_count_zh_characters_and_en_words() -> None:
    assert count_length("林凡走进了秘境。", "zh") == 7
    assert count_length("林凡拿出 iPhone 15，笑了。", "zh") == 2 + 2 + 2 + 2  # CJK plus Latin words
    assert count_length("Lin Fan walked into the old ruins, didn't he?", "en") == 9
    assert count_length("", "en") == 0
