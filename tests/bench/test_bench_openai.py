"""`storyloom bench openai` runs end to end and prints its figures as JSON (a small run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_small_openai_bench_prints_valid_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    cmd = [sys.executable, "-m", "storyloom.cli", "bench", "openai", "--clients", "6", "--ttft-s", "0.2"]
    proc = subprocess.run(
        [*cmd, "--tokens-per-s", "400", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    result = json.loads(proc.stdout)
    assert result["clients"] == 6 and result["completed"] == 6 and result["completed_ratio"] == 1.0
    assert result["measured_clients"] == 6 and result["usage_reported"] == 6
    assert 0 < result["front_added_latency_p50_ms"] <= result["front_added_latency_p99_ms"]
    assert result["cpu_s"]["api"] > 0 and result["cpu_s"]["workers"] > 0
