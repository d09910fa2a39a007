"""`storyloom tools` and `storyloom tools call` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _tools(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "tools", *args, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.slow
def test_list_and_call_and_mistakes_are_one_sentence(tmp_path: Path, sim: Any) -> None:
    listed = _tools(tmp_path, "--json")
    assert listed.returncode == 0, listed.stderr
    names = [t["name"] for t in json.loads(listed.stdout)["tools"]]
    assert "web_search" in names and "fetch_page" in names
    # Against the simulator's search endpoint, like a worker would call it.
    called = _tools(tmp_path, "call", "web_search", "--input", '{"query": "tea", "max_results": 2}',
                    STORYLOOM_SEARCH_URL=sim.url)  # fmt: skip
    assert called.returncode == 0, called.stderr
    result = json.loads(called.stdout)
    assert result["degraded"] is False and len(result["output"]["results"]) == 2
    assert sim.stats()["search"]["completed"] >= 1
    for args, sentence in (
        (("call", "nope"), "no tool named 'nope'"),
        (("call", "web_search", "--input", "["), "--input is not valid JSON"),
        (("call", "web_search", "--input", '{"q": 1}'), "query: Field required"),
    ):
        bad = _tools(tmp_path, *args)
        assert bad.returncode == 2 and sentence in bad.stderr and "Traceback" not in bad.stderr
