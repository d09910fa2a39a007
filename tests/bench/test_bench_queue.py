"""`storyloom bench queue` runs end to end and prints its figures as JSON (a small run, no peers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_small_queue_bench_completes_every_job_and_counts_its_cpu() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    cmd = [sys.executable, "-m", "storyloom.cli", "bench", "queue", "--jobs", "60", "--workers", "1"]
    cmd += ["--backends", "sqlite", "--peers", "nosuchqueue", "--repeats", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    [row] = result["rows"]
    assert row["system"] == "storyloom" and row["backend"] == "sqlite" and row["workers"] == 1
    assert row["jobs"] == 60 and row["jobs_per_s"] > 0
    assert row["cpu_s"]["workers"] > 0 and row["cpu_s_per_1000_jobs"] > 0
    assert any("nosuchqueue" in note for note in result["notes"])


def test_queue_bench_refuses_a_bad_worker_list_with_a_sentence() -> None:
    cmd = [sys.executable, "-m", "storyloom.cli", "bench", "queue", "--workers", "1,zero"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--workers must be" in proc.stderr and "Traceback" not in proc.stderr
