"""Defensive parsing: every broken-JSON shape models actually produce, and the ones we must refuse."""

from __future__ import annotations

import pytest

from storyloom.agents.parsing import json_candidates, parse_structured, prompt_schema
from storyloom.apps.novel.schemas import CreationPlan, JudgeVerdict, QualityReport
from storyloom.errors import OutputParseError

GOOD = '{"score": 82, "issues": ["节奏偏慢"], "summary": "林凡进入秘境。"}'


@pytest.mark.parametrize(
    ("text", "how"),
    [
        (GOOD, "clean"),
        (f"  {GOOD}\n", "clean"),
        (f"好的，以下是审核结果：\n```json\n{GOOD}\n```\n希望有帮助。", "extracted"),
        (f"```\n{GOOD}\n```", "extracted"),
        (f"Sure! Here it is: {GOOD} Let me know.", "extracted"),
        ('{"score": 82, "issues": ["节奏偏慢",], "summary": "林凡进入秘境。",}', "repaired"),
        ("{'score': 82, 'issues': ['节奏偏慢'], 'summary': '林凡进入秘境。'}", "repaired"),
        (
            '{"score": 82, // the score\n "issues": ["节奏偏慢"], /* note */ "summary": "林凡进入秘境。"}',
            "repaired",
        ),
        ('{"score": 82, "issues": ["节奏偏慢"], "summary": "林凡进入秘', "repaired"),  # cut mid-string
        (
            '```json\n{"score": 82, "summary": "林凡进入秘境", "issues": ["节奏偏慢", "对',
            "repaired",
        ),  # cut in a list
        ('{score: 82, issues: ["节奏偏慢"], summary: "林凡进入秘境。"}', "repaired"),  # unquoted keys
    ],
)
def test_broken_shapes_parse(text: str, how: str) -> None:
    parsed = parse_structured(text, QualityReport)
    assert parsed.how == how
    assert parsed.value.score == 82
    assert parsed.value.issues[0] == "节奏偏慢"
    assert parsed.value.summary.startswith("林凡进入秘")


def test_wrapper_object_and_list_are_unwrapped() -> None:
    assert parse_structured('{"report": ' + GOOD + "}", QualityReport).value.score == 82
    assert parse_structured("[" + GOOD + "]", QualityReport).value.score == 82


def test_lenient_fields_clamp_and_coerce() -> None:
    v = parse_structured('{"score": "140", "issues": "太短", "summary": ["一", "二"]}', QualityReport).value
    assert v.score == 100
    assert v.issues == ["太短"]
    assert v.summary == "一；二"
    assert parse_structured('{"score": -5.4, "issues": [], "summary": ""}', QualityReport).value.score == 0
    assert parse_structured('{"score": "85分"}', QualityReport).value.score == 85


def test_a_cut_answer_keeps_what_it_has() -> None:
    v = parse_structured('{"score": 61, "issues": ["结尾仓促", "对白', QualityReport)
    assert v.how == "repaired"
    assert (v.value.score, v.value.issues, v.value.summary) == (61, ["结尾仓促", "对白"], "")


@pytest.mark.parametrize("winner", ["B", "b", " B ", "版本B", "Version B", "“B”"])
def test_judge_winner_spellings(winner: str) -> None:
    assert (
        parse_structured(f'{{"winner": "{winner}", "reasons": "更完整"}}', JudgeVerdict).value.winner == "B"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "这一章写得很好，我觉得不需要修改。",  # prose where JSON was asked
        '{"issues": ["x"]}',  # missing the one field that cannot default
        '{"winner": "C", "reasons": []}',
        "[1, 2, 3]",
    ],
)
def test_unparseable_raises_with_raw(text: str) -> None:
    model = JudgeVerdict if "winner" in text else QualityReport
    with pytest.raises(OutputParseError) as info:
        parse_structured(text, model)
    assert info.value.raw == text


def test_candidates_prefer_fenced_then_braces() -> None:
    cands = json_candidates('x ```json\n{"a": 1}\n``` y {"b": 2}')
    assert cands[0] == '{"a": 1}'
    assert cands[1].startswith('{"a": 1}')


def test_prompt_schema_is_flat_and_keeps_a_property_named_title() -> None:
    schema = prompt_schema(CreationPlan)
    assert "$defs" not in schema and "title" not in schema
    assert set(schema["properties"]) == {"theme", "tone", "key_events", "pacing", "ending_hook"}
    q = prompt_schema(QualityReport)["properties"]["score"]
    assert (q["minimum"], q["maximum"]) == (0, 100)
