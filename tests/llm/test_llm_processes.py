"""Several worker processes share one quota (SQLite file, or Redis) and never push the simulator over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyloom.bench.gateway.runner import BenchOptions, SimProcess, saturation_phase

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, limits_url: str, *, kill: bool) -> dict:
    window_s = 3.0
    opts = BenchOptions(
        duration_s=8.0,
        headroom=0.1,
        workers=3,
        tokens_per_s=4000,
        requests_per_s=12,
        concurrency=8,
        window_s=window_s,
        lease_ttl_s=2.0,
        kill=kill,
        flows_per_tenant=4,
    )
    rpm_w, tpm_w = int(12 * window_s), int(4000 * window_s)
    sim = SimProcess(
        {
            "default": {"ttft_s": 0.05, "tokens_per_s": 2000.0},
            "quota": {"rpm": rpm_w, "tpm": tpm_w, "concurrency": 8, "mode": "count"},
            "window_s": window_s,
            "chunk_tokens": 16,
        },
    )
    try:
        return saturation_phase(opts, tmp_path, "t", sim, window_s, limits_url, rpm_w, tpm_w)
    finally:
        sim.close()


def test_three_processes_on_sqlite_stay_within_quota_and_a_killed_one_leaks_no_lease(tmp_path: Path) -> None:
    result = _run(tmp_path, f"sqlite:///{tmp_path / 'limits.db'}", kill=True)
    over = result["overshoot"]
    assert result["logical_calls"] > 30  # real traffic, saturating
    assert over["over_quota_admitted"] == 0
    assert over["max_window_requests"] <= over["rpm_quota"] and over["max_window_tokens"] <= over["tpm_quota"]
    assert over["max_concurrency"] <= over["concurrency_quota"]
    assert over["max_window_tokens"] > 0.7 * over["tpm_quota"]  # and the quota is used
    kill = result["kill"]
    assert kill["killed"] and kill["victim_live_leases_after_ttl"] == 0 and kill["live_leases_after_run"] == 0


@pytest.mark.redis
def test_three_processes_on_redis_stay_within_quota(tmp_path: Path, redis_url: str) -> None:
    result = _run(tmp_path, redis_url, kill=False)
    over = result["overshoot"]
    assert result["logical_calls"] > 30
    assert over["over_quota_admitted"] == 0, over
    assert over["max_concurrency"] <= over["concurrency_quota"]
