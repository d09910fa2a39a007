"""Embedded runners and the less common knobs: serve_sim on the current loop, TPM settling, hang end."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from storyloom.errors import ConfigError
from storyloom.sim import ModelProfile, Quota, SimConfig, load_sim_config, serve_sim

MSGS = [{"role": "user", "content": "Characters: Alice, Bob. Alice runs."}]


async def test_serve_sim_on_current_loop() -> None:
    config = SimConfig(default=ModelProfile(ttft_s=0.0, tokens_per_s=1e6), quota=Quota(rpm=1), window_s=30)
    async with serve_sim(config) as sim, httpx.AsyncClient(timeout=5) as client:
        assert sim.url.endswith("/v1")
        first = await client.post(f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS})
        second = await client.post(f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS})
        assert (first.status_code, second.status_code) == (200, 429)
        assert sim.stats()["rejected_429"]["rpm"] == 1
        sim.configure(quota={"rpm": None})
        third = await client.post(f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS})
        assert third.status_code == 200
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):  # stopped at the end of the block
            await client.get(f"{sim.url}/models")


async def test_tpm_usage_mode_settles_to_real_usage(sim: Any) -> None:
    sim.configure(quota={"tpm": 10_000, "tpm_charge": "usage"}, window_s=30)
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(
            f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS, "max_tokens": 5000}
        )
    usage = r.json()["usage"]
    await asyncio.sleep(0.05)
    window = sim.stats()["window"]
    assert window["max_window_tokens"] >= 5000  # reserved at admission
    assert window["current_tokens"] == usage["total_tokens"]  # settled afterwards


async def test_hang_ends_with_504_after_hang_s(sim: Any) -> None:
    sim.configure(faults={"hang": 1.0}, hang_s=0.3)
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.post(
            f"{sim.url}/chat/completions", json={"model": "m", "messages": MSGS, "stream": True}
        )
    assert r.status_code == 504


def test_config_file_errors_are_one_sentence(tmp_path: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("quota:\n  rpm: -1\n")
    with pytest.raises(ConfigError, match=r"quota\.rpm"):
        load_sim_config(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON/YAML"):
        load_sim_config(broken)
    good = tmp_path / "good.json"
    good.write_text('{"models": {"scene": {"latency_s": 2}}, "default": {"ttft_s": 0.5}}')
    cfg = load_sim_config(good)
    assert cfg.profile("scene").latency_s == 2 and cfg.profile("scene").ttft_s == 0.5
    assert cfg.profile("other").latency_s is None


async def test_serve_sim_leaves_signal_handlers_alone() -> None:
    """Ctrl-C must reach the host program (e.g. `storyloom write`), not stop only the simulator."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    async with serve_sim():
        assert signal.getsignal(signal.SIGINT) is before
