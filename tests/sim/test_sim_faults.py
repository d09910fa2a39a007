"""Faults on demand: 5xx, injected 429, hang, stream cut, prose for JSON, empty; per model and live."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}, "title": {"type": "string"}}}
MSGS = [{"role": "user", "content": "Characters: Alice, Bob. Alice runs to the pier."}]
JSON_MSGS = [{"role": "user", "content": f"Rate it.\n```json\n{json.dumps(SCHEMA)}\n```"}]


def post(sim: Any, http: httpx.Client, msgs: list[dict[str, str]] = MSGS, **extra: Any) -> httpx.Response:
    return http.post(
        f"{sim.url}/chat/completions", json={"model": "m", "messages": msgs, **extra}, timeout=10
    )


def test_error_5xx_everywhere_then_healthy_again(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"error_5xx": 1.0})
    codes = {post(sim, http).status_code for _ in range(12)}
    assert codes <= {500, 502, 503} and len(codes) >= 2
    r = post(sim, http)
    assert r.json()["error"]["type"] == "server_error"
    sim.configure(faults={"error_5xx": 0.0})
    assert post(sim, http).status_code == 200
    stats = sim.stats()
    assert stats["faults"]["error_5xx"] == 13 and stats["admitted"] == 1


def test_error_429_injected_has_retry_after(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"error_429": 1.0}, fault_retry_after_s=2.5)
    r = post(sim, http)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3" and r.headers["retry-after-ms"] == "2500"
    assert sim.stats()["rejected_429"]["injected"] == 1


def test_fault_rate_is_respected_roughly(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"error_5xx": 0.3})
    failures = sum(post(sim, http).status_code >= 500 for _ in range(100))
    assert 12 <= failures <= 50


def test_per_model_faults_override_global(sim: Any, http: httpx.Client) -> None:
    sim.configure(models={"bad": {"faults": {"error_5xx": 1.0}}})
    assert post(sim, http).status_code == 200
    r = http.post(f"{sim.url}/chat/completions", json={"model": "bad", "messages": MSGS})
    assert r.status_code >= 500


def test_hang_does_not_block_the_server_and_frees_the_slot(sim: Any, http: httpx.Client) -> None:
    sim.configure(models={"slow": {"faults": {"hang": 1.0}}}, quota={"concurrency": 5})
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"{sim.url}/chat/completions", json={"model": "slow", "messages": MSGS}, timeout=0.5)
    start = time.monotonic()
    assert post(sim, http).status_code == 200  # others are served while it hangs
    assert time.monotonic() - start < 2.0
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = sim.stats()
    assert stats["in_flight"] == 0  # the client gave up, so its slot is free
    assert stats["faults"]["hang"] == 1 and stats["client_disconnects"] == 1


def test_stream_cut_drops_connection_without_done(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"stream_cut": 1.0}, default={"answer_tokens": 400})
    payload = {"model": "m", "messages": MSGS, "stream": True}
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", f"{sim.url}/chat/completions", json=payload) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
    assert any(line.startswith("data: {") for line in lines)
    assert "data: [DONE]" not in lines
    assert not any('"finish_reason":"stop"' in line for line in lines)
    assert sim.stats()["faults"]["stream_cut"] == 1


def test_stream_cut_non_streaming_body_is_truncated(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"stream_cut": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        post(sim, http)


def test_prose_json_varies_and_only_when_json_asked(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"prose_json": 1.0})
    assert post(sim, http).status_code == 200  # no JSON asked: a normal answer
    kinds = set()
    for i in range(24):
        msgs = [{"role": "user", "content": JSON_MSGS[0]["content"] + f" #{i}"}]
        text = post(sim, http, msgs).json()["choices"][0]["message"]["content"]
        try:
            json.loads(text)
            kinds.add("valid")
        except json.JSONDecodeError:
            if text.startswith("```json"):
                kinds.add("fence")
            elif text.rstrip().endswith(",}"):
                kinds.add("trailing-comma")
            elif "{" in text:
                kinds.add("buried")
            else:
                kinds.add("prose")
    assert "valid" not in kinds
    assert kinds == {"fence", "trailing-comma", "buried", "prose"}
    assert sim.stats()["faults"]["prose_json"] == 24


def test_empty_answer_streaming_and_plain(sim: Any, http: httpx.Client) -> None:
    sim.configure(faults={"empty": 1.0})
    body = post(sim, http).json()
    assert body["choices"][0]["message"]["content"] == "" and body["usage"]["completion_tokens"] == 0
    payload = {"model": "m", "messages": MSGS, "stream": True}
    with http.stream("POST", f"{sim.url}/chat/completions", json=payload) as r:
        lines = [line for line in r.iter_lines() if line]
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ""
    assert lines[-1] == "data: [DONE]"


def test_max_tokens_caps_with_length_finish(sim: Any, http: httpx.Client) -> None:
    body = post(sim, http, max_tokens=7).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 7
