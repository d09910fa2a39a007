"""A small `storyloom bench service --json` run prints valid JSON with every job completed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _small_bench(*extra: str) -> dict[str, Any]:
    """6 clients, fast simulator: the figures are meaningless, their presence and consistency not."""
    done = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "bench", "service", "--clients", "6", "--versions", "1",
         "--workers", "1..1", "--ttft-s", "0.05", "--tokens-per-s", "2000", "--json", *extra],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_small_bench_prints_valid_json() -> None:
    result = _small_bench()
    assert result["submitted"] == 6 and result["completed"] == 6 and result["completed_ratio"] == 1.0
    assert result["events_exactly_once_in_order"] is True
    assert result["events_received"] >= 6 * 5
    assert 0 < result["e2e_p50_s"] <= result["e2e_p99_s"]
    assert 0 < result["submit_p50_ms"] <= result["submit_p99_ms"]
    assert 0 < result["stream_open_p50_ms"] <= result["stream_open_p99_ms"]
    assert result["event_lag_p99_ms"] > 0 and result["step_commits_per_s"] > 0
    assert result["rss_mb_per_inflight_job"] > 0
    assert result["server_commit_lag_p99_ms_bucket"] is not None  # the workers' metric reached the API
    assert result["cpu_s"]["workers"] > 0 and result["cpu_s"]["api"] > 0
    assert result["simulator"]["nice"] == 10 and result["simulator"]["jitter"] == 0.3


def test_bench_rejects_a_bad_worker_range() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "bench", "service", "--workers", "3..1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: --workers")


def test_small_bench_submitting_and_streaming_in_one_request_on_two_api_processes() -> None:
    result = _small_bench("--follow", "stream", "--api-processes", "2")
    assert result["follow"] == "stream" and result["api_processes"] == 2
    assert result["completed"] == 6 and result["events_exactly_once_in_order"] is True
    # the stream exists before the job does: every event is created after the client asked for it
    assert result["events_live"] == result["events_received"] >= 6 * 5
    assert result["submit_p50_ms"] == result["stream_open_p50_ms"] > 0


def test_bench_rejects_an_unknown_way_to_follow() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "bench", "service", "--follow", "poll"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: --follow")


def test_small_bench_with_several_watchers_per_job_over_two_client_processes() -> None:
    """K clients follow each job, in processes of their own: every one sees every event once."""
    result = _small_bench("--watchers-per-job", "3", "--client-processes", "2")
    assert result["watchers_per_job"] == 3 and result["client_processes"] == 2
    assert result["sse_clients"] == 18 and result["submitted"] == 6 and result["completed"] == 6
    assert result["streams_completed_ratio"] == 1.0 and result["events_exactly_once_in_order"] is True
    # each of the 18 streams received the whole log of its job (the submitters' alone: a third)
    assert result["events_received"] >= 18 * 5
    assert result["cpu_s_during_run"]["clients"] > 0  # the client processes' CPU is counted
