"""Content: determinism by seed, target lengths, max_tokens in streams, what is read from prompts."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import storyloom.sim
from storyloom.sim.prompt import analyse
from storyloom.sim.story import count_units


def content(http: httpx.Client, url: str, text: str, **extra: Any) -> dict[str, Any]:
    payload = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    r = http.post(f"{url}/chat/completions", json=payload)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_same_body_same_content_other_body_or_seed_differs(sim: Any, http: httpx.Client) -> None:
    prompt = "Characters: Alice, Bob. Alice finds a map."
    a = content(http, sim.url, prompt)["choices"][0]["message"]["content"]
    b = content(http, sim.url, prompt)["choices"][0]["message"]["content"]
    c = content(http, sim.url, prompt + " Style hint: terse.")["choices"][0]["message"]["content"]
    assert a == b and a != c
    sim.configure(seed=43)
    assert content(http, sim.url, prompt)["choices"][0]["message"]["content"] != a


def test_fault_sequence_is_deterministic_for_sequential_requests(sim: Any, http: httpx.Client) -> None:
    def run() -> list[int]:
        sim.reset_stats()  # reseeds the fault RNG
        return [content_status(http, sim.url) for _ in range(30)]

    sim.configure(faults={"error_5xx": 0.3, "error_429": 0.2})
    first, second = run(), run()
    assert first == second
    assert len(set(first)) >= 3  # 200, 429 and some 5xx


def content_status(http: httpx.Client, url: str) -> int:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return http.post(f"{url}/chat/completions", json=payload).status_code


@pytest.mark.parametrize(
    ("prompt", "unit", "amount"),
    [
        ("Characters: Alice, Bob. Write the chapter. Target length: 600 words.", "words", 600),
        ("主角：林远、苏晚。请写这一章。目标字数：1500", "chars", 1500),
        ("主角：林远。写一个场景，约800字。", "chars", 800),
    ],
)
def test_target_length_is_approximated(
    sim: Any, http: httpx.Client, prompt: str, unit: Any, amount: int
) -> None:
    text = content(http, sim.url, prompt)["choices"][0]["message"]["content"]
    assert amount <= count_units(text, unit) <= amount * 1.15


def test_target_length_capped_by_max_tokens_in_stream(sim: Any, http: httpx.Client) -> None:
    payload = {
        "model": "m",
        "messages": [{"role": "user", "content": "目标字数：3000"}],
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", f"{sim.url}/chat/completions", json=payload) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 100


def test_prompt_analysis_reads_names_places_phrases() -> None:
    zh = analyse(
        [{"role": "user", "content": "主角：林远、苏晚（侦探）\n大纲：林远在青石镇发现了一封旧信。约3000字"}]
    )
    assert zh.language == "zh"
    assert zh.names[:2] == ("林远", "苏晚")
    assert "青石镇" in zh.places
    assert any("旧信" in p for p in zh.phrases)
    assert zh.target is not None and (zh.target.amount, zh.target.unit) == (3000, "chars")
    en = analyse(
        [
            {"role": "system", "content": "You are a novelist. Return JSON."},
            {"role": "user", "content": 'Cast: {"name": "Mira Vale"}\nMira sails to Port Ashen at dawn'},
        ]
    )
    assert en.language == "en" and en.names[0] == "Mira Vale"
    assert "Port Ashen" in en.places
    assert en.target is None and en.schema is None


def test_chinese_prompt_with_english_schema_is_still_chinese() -> None:
    schema = {
        "type": "object",
        "properties": {"plot_points": {"type": "array"}, "summary": {"type": "string"}},
    }
    facts = analyse([{"role": "user", "content": f"请为林远写情节。\n```json\n{json.dumps(schema)}\n```"}])
    assert facts.language == "zh" and facts.schema == schema


def test_public_surface() -> None:
    for name in storyloom.sim.__all__:
        assert hasattr(storyloom.sim, name), name
