"""`bench service --nodes`: wrong combinations are one sentence and exit 2, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    cmd = [sys.executable, "-m", "storyloom.cli", "bench", "service", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--nodes", "--database-url", "sqlite+aiosqlite:///x.db"], "--nodes needs PostgreSQL"),
        (["--redis-url", "redis://127.0.0.1:1/0"], "--database-url and --redis-url go with --nodes."),
    ],
)
def test_wrong_node_options_are_a_sentence(args: list[str], sentence: str) -> None:
    done = _bench(*args)
    assert done.returncode == 2, done.stderr
    text = " ".join(done.stderr.split())  # the CLI wraps long sentences at its width
    assert sentence in text and "Traceback" not in text
