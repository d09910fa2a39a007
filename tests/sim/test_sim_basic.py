"""The simulator speaks the OpenAI wire protocol: JSON and SSE answers with usage, models, JSON by schema."""

from __future__ import annotations

import json
from typing import Any

import httpx

from storyloom.llm.tokens import estimate_tokens

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "issues": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "title": {"type": "string"},
        "passed": {"type": "boolean"},
        "lead": {"$ref": "#/$defs/Character"},
        "mood": {"anyOf": [{"type": "string", "enum": ["dark", "light"]}, {"type": "null"}]},
    },
    "required": ["score", "issues", "title", "passed", "lead"],
    "$defs": {
        "Character": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 10, "maximum": 20},
                "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            },
            "required": ["name", "age"],
        }
    },
}


def stream_text(lines: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The concatenated content and every parsed chunk of an SSE answer."""
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


def test_json_completion_has_usage(sim: Any, http: httpx.Client) -> None:
    msgs = [{"role": "user", "content": "Characters: Alice, Bob. Alice finds a map in Ravenport."}]
    r = http.post(f"{sim.url}/chat/completions", json={"model": "writer", "messages": msgs})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == estimate_tokens(text) > 50
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert "Alice" in text or "Bob" in text


def test_stream_with_usage_matches_non_stream(sim: Any, http: httpx.Client) -> None:
    msgs = [{"role": "user", "content": "Characters: Alice, Bob. Bob hides in the lighthouse."}]
    payload = {"model": "writer", "messages": msgs}
    plain = http.post(f"{sim.url}/chat/completions", json=payload).json()
    streamed = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", f"{sim.url}/chat/completions", json=streamed) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    text, chunks = stream_text(lines)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert text == plain["choices"][0]["message"]["content"]
    assert len(chunks) > 5  # really streamed in pieces


def test_stream_without_include_usage_has_no_usage(sim: Any, http: httpx.Client) -> None:
    payload = {"model": "w", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with http.stream("POST", f"{sim.url}/chat/completions", json=payload) as r:
        lines = [line for line in r.iter_lines() if line]
    _, chunks = stream_text(lines)
    assert all("usage" not in c for c in chunks)


def test_models_lists_configured_names(sim: Any, http: httpx.Client) -> None:
    sim.configure(models={"scene": {"latency_s": 0.01}})
    ids = [m["id"] for m in http.get(f"{sim.url}/models").json()["data"]]
    assert "scene" in ids


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """A small validator for the subset the simulator claims to support."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, root)
                return
            except AssertionError as exc:
                errors.append(exc)
        raise AssertionError(errors)
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"]
    if kind == "object":
        assert isinstance(value, dict)
        for key in schema.get("required", []):
            assert key in value, key
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, root)
    elif kind == "array":
        assert isinstance(value, list) and len(value) >= schema.get("minItems", 0)
        for item in value:
            validate(item, schema["items"], root)
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value)
    elif kind == "number":
        assert isinstance(value, int | float)
        assert value > schema.get("exclusiveMinimum", value - 1) and value <= schema.get("maximum", value)
    elif kind == "string":
        assert isinstance(value, str) and value
    elif kind == "boolean":
        assert isinstance(value, bool)
    elif kind == "null":
        assert value is None


def test_json_answer_follows_fenced_schema(sim: Any, http: httpx.Client) -> None:
    prompt = (
        "Characters: Alice, Bob. Judge the chapter. Return JSON matching:\n```json\n"
        + json.dumps(SCHEMA)
        + "\n```"
    )
    for i in range(5):
        payload = {
            "model": "quality",
            "messages": [{"role": "user", "content": f"{prompt}\nround {i}"}],
            "response_format": {"type": "json_object"},
        }
        value = json.loads(
            http.post(f"{sim.url}/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
        )
        validate(value, SCHEMA, SCHEMA)
        assert value["lead"]["name"] in ("Alice", "Bob")


def test_json_answer_follows_response_format_schema_and_score_range(sim: Any, http: httpx.Client) -> None:
    sim.configure(models={"judge": {"score_range": [60, 65]}})
    fmt = {"type": "json_schema", "json_schema": {"name": "q", "schema": SCHEMA}}
    scores = []
    for i in range(8):
        payload = {
            "model": "judge",
            "messages": [{"role": "user", "content": f"rate {i}"}],
            "response_format": fmt,
        }
        value = json.loads(
            http.post(f"{sim.url}/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
        )
        validate(value, SCHEMA, SCHEMA)
        scores.append(value["score"])
    assert all(60 <= s <= 65 for s in scores)


def test_chinese_prompt_gets_chinese_story_with_names(sim: Any, http: httpx.Client) -> None:
    content = "主角：林远、苏晚。大纲：林远在青石镇发现了一封旧信，苏晚决定帮他查明真相。"
    r = http.post(
        f"{sim.url}/chat/completions", json={"model": "w", "messages": [{"role": "user", "content": content}]}
    )
    text = r.json()["choices"][0]["message"]["content"]
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    assert cjk > 0.6 * len(text.replace(" ", "").replace("\n", ""))
    assert "林远" in text and "苏晚" in text


def test_english_prompt_gets_english_story(sim: Any, http: httpx.Client) -> None:
    content = "Characters: Mira, Oskar. Outline: Mira steals the ledger from the Harbor Guild."
    r = http.post(
        f"{sim.url}/chat/completions", json={"model": "w", "messages": [{"role": "user", "content": content}]}
    )
    text = r.json()["choices"][0]["message"]["content"]
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert "Mira" in text and "Oskar" in text
    assert len(text.split()) > 40


def test_bad_requests_get_400_with_message(sim: Any, http: httpx.Client) -> None:
    url = f"{sim.url}/chat/completions"
    for body in (b"not json", b"[]", b'{"messages": []}', b'{"model": "m", "messages": []}'):
        r = http.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        assert r.json()["error"]["message"]
    r = http.post(url, json={"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})
    assert r.status_code == 400
    assert http.get(f"{sim.base_url}/nope").status_code == 404
    assert sim.stats()["bad_requests"] == 5


def test_answers_validate_against_pydantic_models(sim: Any, http: httpx.Client) -> None:
    """Schemas as pydantic emits them ($defs, Optional, Literal, constraints) are answered validly."""
    from typing import Literal

    from pydantic import BaseModel, Field

    class Beat(BaseModel):
        who: str
        tension: int = Field(ge=1, le=5)

    class Report(BaseModel):
        score: int = Field(ge=0, le=100)
        verdict: Literal["keep", "revise"]
        beats: list[Beat] = Field(min_length=1, max_length=4)
        note: str | None = None
        ratio: float = Field(gt=0, lt=1)
        title: str = Field(min_length=3, max_length=40)

    schema = Report.model_json_schema()
    scores = []
    for i in range(10):
        prompt = f"主角：林远、苏晚。第{i}稿。请按此格式返回：\n```json\n{json.dumps(schema)}\n```"
        text = content_of(http, sim.url, prompt)
        report = Report.model_validate_json(text)
        scores.append(report.score)
    assert all(50 <= s <= 95 for s in scores)  # the default score distribution
    assert len(set(scores)) > 3


def content_of(http: httpx.Client, url: str, prompt: str) -> str:
    r = http.post(
        f"{url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": prompt}]}
    )
    text: str = r.json()["choices"][0]["message"]["content"]
    return text
