"""The chapter benchmark: critical-path arithmetic, and a short real run printing valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from storyloom.apps.novel.models import AgentRun, ChapterResult, JudgeReport, VersionResult
from storyloom.apps.novel.timing import model_times, version_critical_path


def _version(index: int, **times: float | list[float]) -> VersionResult:
    runs = []
    for agent, t in times.items():
        for value in t if isinstance(t, list) else [t]:
            runs.append(AgentRun(agent=agent, model_s=value, calls=1))
    return VersionResult(index=index, style_hint="", ok=True, agents=runs)


def test_critical_path_follows_the_dag() -> None:
    v = _version(1, plot=1, character=1, scene=2, synthesis=1, optimize=1, quality=[0.5, 0.25], revise=[0.5])
    # plot 1 + max(char 1, scene 2) + synth 1 + max(opt 1, first check 0.5) + revise 0.5 + re-check 0.25
    assert version_critical_path(v) == 1 + 2 + 1 + 1 + 0.5 + 0.25
    slow = _version(2, plot=1, scene=3, synthesis=1, optimize=1, quality=2)  # character skipped
    result = ChapterResult(
        run_id="r",
        language="zh",
        target_length=100,
        versions=[v, slow, VersionResult(index=3, style_hint="", ok=False, error="boom")],
        chosen=1,
        chosen_by="judge",
        judge=JudgeReport(winner=1, elapsed_s=0.7),
        director=AgentRun(agent="director", model_s=1.0),
    )
    times = model_times(result)
    assert times.critical_path_s == 1 + (1 + 3 + 1 + 2)  # director + the slowest version
    assert times.serial_s == 1 + 7.25 + 8 and times.judge_s == 0.7


def test_bench_chapter_prints_valid_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "storyloom.cli",
            "bench",
            "chapter",
            "--json",
            "--latency",
            "0.2",
            "--scene-latency",
            "0.4",
            "--versions",
            "2",
            "--target-length",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    one, two = report["runs"]["1"], report["runs"]["2"]
    for run in (one, two):
        assert run["failed_versions"] == [] and run["degraded_agents"] == []
        # director 0.2 + plot 0.2 + scene 0.4 + synthesis 0.2 + optimize/quality 0.2 = 1.2 s of model time
        assert 1.1 < run["critical_path_model_s"] < 2.0
        assert run["critical_path_model_s"] <= run["wall_s"] * 1.01
        assert run["wall_over_critical_path"] < 1.5  # generous: the CI machine is shared
    assert one["judge_calls"] == 0 and two["judge_calls"] == 2 and two["judge_s"] > 0
    assert two["serial_model_s"] > 1.7 * one["serial_model_s"]
    assert report["versions_2_over_1"] < 1.5 and isinstance(report["pass"], bool)
