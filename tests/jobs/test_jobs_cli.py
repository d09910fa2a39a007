"""`storyloom worker` turns bad settings into one sentence and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENTRY = "from storyloom.cli import main; main()"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x@y/z", "unsupported database"),
        ("postgresql+asyncpg://nobody@127.0.0.1:1/x", "cannot use its database"),
    ],
)
def test_bad_database_is_one_sentence_and_exit_2(url: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY, "worker", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_service_processes_run_on_uvloop() -> None:
    import asyncio

    from storyloom import eventloop

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(loop_type()).startswith("uvloop")
