"""Quotas: RPM, TPM and concurrency 429s with OpenAI's headers; count mode records window maxima."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from storyloom.llm.tokens import estimate_message_tokens

MSGS = [{"role": "user", "content": "Characters: Alice, Bob. Alice runs."}]
HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def call(sim: Any, http: httpx.Client, **extra: Any) -> httpx.Response:
    return http.post(f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS, **extra})


def test_rpm_429_with_headers_and_sliding_window(sim: Any, http: httpx.Client) -> None:
    sim.configure(quota={"rpm": 3, "tpm": 100_000}, window_s=1.0)
    ok = [call(sim, http) for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert ok[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert ok[2].headers["x-ratelimit-remaining-requests"] == "0"
    r = call(sim, http)
    assert r.status_code == 429
    for h in HEADERS:
        assert h in r.headers, h
    assert r.headers["retry-after"] == "1"
    assert 1 <= int(r.headers["retry-after-ms"]) <= 1000
    assert r.json()["error"]["type"] == "rate_limit_exceeded"
    stats = sim.stats()
    assert stats["rejected_429"]["rpm"] == 1 and stats["admitted"] == 3
    asyncio.run(asyncio.sleep(int(r.headers["retry-after-ms"]) / 1000 + 0.05))
    assert call(sim, http).status_code == 200  # the window slid: the first request left it


def test_tpm_reserves_prompt_plus_max_tokens(sim: Any, http: httpx.Client) -> None:
    prompt = estimate_message_tokens(MSGS)
    sim.configure(quota={"tpm": 2 * (prompt + 100) + 10}, window_s=30.0)
    assert call(sim, http, max_tokens=100).status_code == 200
    assert call(sim, http, max_tokens=100).status_code == 200
    r = call(sim, http, max_tokens=100)
    assert r.status_code == 429
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 10
    assert r.headers["x-ratelimit-limit-tokens"] == str(2 * (prompt + 100) + 10)
    assert 25 <= int(r.headers["retry-after"]) <= 30
    assert sim.stats()["rejected_429"]["tpm"] == 1
    too_big = call(sim, http, max_tokens=10_000)
    assert too_big.status_code == 429 and "too large" in too_big.json()["error"]["message"]


def test_tpm_without_max_tokens_charges_the_answer_length(sim: Any, http: httpx.Client) -> None:
    first = call(sim, http)
    charge = first.json()["usage"]["total_tokens"]
    sim.configure(quota={"tpm": charge * 3}, window_s=30.0)  # the first call is still in the window
    assert call(sim, http).status_code == 200  # same body -> same answer -> same charge
    assert call(sim, http).status_code == 200
    assert call(sim, http).status_code == 429


async def test_concurrency_429(sim: Any) -> None:
    sim.configure(quota={"concurrency": 2}, default={"latency_s": 1.5})
    async with httpx.AsyncClient(timeout=10) as client:
        payload = {"model": "m", "messages": MSGS}
        rs = await asyncio.gather(
            *(client.post(f"{sim.url}/chat/completions", json=payload) for _ in range(5))
        )
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 429, 429, 429]
    stats = sim.stats()
    assert stats["rejected_429"]["concurrency"] == 3
    assert stats["max_concurrency"] == 2 and stats["in_flight"] == 0


async def test_count_mode_admits_all_and_records_window_maxima(sim: Any) -> None:
    sim.configure(quota={"rpm": 4, "tpm": 10_000_000, "mode": "count"}, window_s=1.5)
    async with httpx.AsyncClient(timeout=10) as client:
        payload = {"model": "m", "messages": MSGS, "max_tokens": 50}
        url = f"{sim.url}/chat/completions"
        first = await asyncio.gather(*(client.post(url, json=payload) for _ in range(6)))
        await asyncio.sleep(1.6)  # the window is empty again
        second = await asyncio.gather(*(client.post(url, json=payload) for _ in range(3)))
    assert all(r.status_code == 200 for r in [*first, *second])
    stats = sim.stats()
    prompt = estimate_message_tokens(MSGS)
    assert stats["max_window_requests"] == 6
    assert stats["max_window_tokens"] == 6 * (prompt + 50)
    assert stats["over_quota_admitted"] == 2
    assert stats["window"]["mode"] == "count"
    assert sum(stats["rejected_429"].values()) == 0


def test_enforce_mode_reports_window_maxima_too(sim: Any, http: httpx.Client) -> None:
    sim.configure(quota={"rpm": 2}, window_s=30.0)
    for _ in range(4):
        call(sim, http)
    stats = sim.stats()
    assert stats["max_window_requests"] == 2 and stats["over_quota_admitted"] == 0


def test_api_keys(sim: Any, http: httpx.Client) -> None:
    sim.configure(api_keys=["sk-good"])
    bad = http.post(
        f"{sim.url}/chat/completions",
        json={"model": "m", "messages": MSGS},
        headers={"Authorization": "Bearer x"},
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    good = http.post(
        f"{sim.url}/chat/completions",
        json={"model": "m", "messages": MSGS},
        headers={"Authorization": "Bearer sk-good"},
    )
    assert good.status_code == 200
    assert sim.stats()["unauthorized"] == 1


@pytest.mark.parametrize("patch", [{"quota": {"rpm": 0}}, {"faults": {"hang": 2}}, {"nope": 1}])
def test_invalid_config_patch_is_400(sim: Any, http: httpx.Client, patch: dict[str, Any]) -> None:
    r = http.post(f"{sim.base_url}/sim/config", json=patch)
    assert r.status_code == 400
    assert "invalid" in r.json()["error"]["message"]


def test_config_patch_deep_merges_and_stats_reset(sim: Any, http: httpx.Client) -> None:
    r = http.post(
        f"{sim.base_url}/sim/config", json={"models": {"a": {"ttft_s": 0.01}}, "quota": {"rpm": 50}}
    )
    assert r.status_code == 200
    http.post(f"{sim.base_url}/sim/config", json={"models": {"a": {"tokens_per_s": 99.0}}})
    cfg = http.get(f"{sim.base_url}/sim/config").json()
    assert cfg["models"]["a"]["ttft_s"] == 0.01 and cfg["models"]["a"]["tokens_per_s"] == 99.0
    assert cfg["quota"]["rpm"] == 50
    assert cfg["default"]["ttft_s"] == 0.005  # the fixture's, untouched
    call(sim, http)
    assert http.get(f"{sim.base_url}/stats").json()["requests"] == 1
    assert http.post(f"{sim.base_url}/stats/reset").json()["requests"] == 0
