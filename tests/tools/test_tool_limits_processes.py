"""A tool's limits hold across 3 real processes: the simulated search counts what it receives
(quota in count mode: it never refuses, it records the most requests in any window and the most at
once), and neither ever exceeds the tool's calls_per_minute nor its max_concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("limit_worker.py")
CALLS, WINDOW_S, CONCURRENCY, SECONDS = 12, 2.0, 3, 5.0


def _run(limits_url: str, sim: Any) -> list[dict[str, int]]:
    sim.reset_stats()
    sim.configure(
        search={
            "latency_s": 0.05,
            "window_s": WINDOW_S,
            "quota": {"rpm": CALLS, "concurrency": CONCURRENCY, "mode": "count"},
        }
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd() / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    args = [limits_url, sim.url, str(SECONDS), str(CALLS), str(WINDOW_S), str(CONCURRENCY)]
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _check(outcomes: list[dict[str, int]], sim: Any) -> None:
    stats = sim.stats()["search"]
    sim.configure(search={"window_s": 60.0, "quota": {"rpm": None, "concurrency": None, "mode": "enforce"}})
    ok = sum(o.get("ok", 0) for o in outcomes)
    assert stats["over_quota_admitted"] == 0, stats  # no window ever held more than the quota
    assert stats["max_window_requests"] <= CALLS and stats["max_concurrency"] <= CONCURRENCY
    # Every process got its share, and the quota was used: the bucket holds burst (0.2) × CALLS and
    # refills the rest over the window + 1 s (limits/state.py); processes start late on 2 busy cores.
    assert all(o.get("ok", 0) > 0 for o in outcomes), outcomes
    bucket = 0.2 * CALLS + 0.8 * CALLS / (WINDOW_S + 1.0) * SECONDS
    assert ok == stats["completed"] >= 0.3 * bucket
    assert set().union(*outcomes) <= {"ok", "limit_wait"}


@pytest.mark.slow
def test_three_processes_share_a_sqlite_limit(tmp_path: Path, sim: Any) -> None:
    outcomes = _run(f"sqlite:///{tmp_path / 'limits.db'}", sim)
    _check(outcomes, sim)


@pytest.mark.slow
@pytest.mark.redis
def test_three_processes_share_a_redis_limit(redis_url: str, sim: Any) -> None:
    outcomes = _run(redis_url, sim)
    _check(outcomes, sim)
