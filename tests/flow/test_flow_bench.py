"""`storyloom bench engine` runs a small version of itself and prints one valid JSON object."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from storyloom.commands.bench_engine import register
from storyloom.errors import InputError


def bench_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Benchmarks (a group, so `engine` is a sub-command as under `storyloom bench`)."""

    register(app)
    return app


@pytest.mark.slow
def test_small_bench_prints_valid_json() -> None:
    args = ["engine", "--json", "--runs", "300", "--sleep-s", "0.05", "--cpu-runs", "200", "--repeats", "1"]
    result = CliRunner().invoke(bench_app(), args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    per_step = report["cpu"]["us_per_step"]
    assert set(per_step) == {"bare", "events", "no_events", "checkpoints"}
    assert all(v > 0 for v in per_step.values())
    for impl in ("bare", "engine"):
        run = report["concurrent"][impl]
        assert run["completed"] == run["runs"] == 300
        assert run["wall_s"] >= 0.25  # five 50 ms calls on the critical path
        assert run["rss_kb_per_run"] >= 0
    assert report["concurrent"]["engine"]["events"] == 300 * (2 + 7 * 2)
    assert report["met"]["wall_s"] is None  # the wall target is defined for 10k runs x 1 s only


def test_bad_arguments_are_a_user_error() -> None:
    result = CliRunner().invoke(bench_app(), ["engine", "--runs", "0"])
    assert isinstance(result.exception, InputError)
    result = CliRunner().invoke(bench_app(), ["engine", "--sleep-s", "-1"])
    assert isinstance(result.exception, InputError)
