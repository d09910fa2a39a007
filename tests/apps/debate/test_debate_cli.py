"""`storyloom run debate`: a conversation from the command line (the simulator in process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storyloom.apps.debate.conversations import ConversationStore
from storyloom.config import Settings
from storyloom.store.database import Database

pytestmark = pytest.mark.slow  # two CLI processes, each starting the simulator and migrating

ENTRY = "from storyloom.cli import main; main()"


def _run(tmp_path: Path, body: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        "run",
        "debate",
        "--input",
        json.dumps(body),
        "--data-dir",
        str(tmp_path),
        "-q",
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_a_conversation_from_the_cli(tmp_path: Path) -> None:
    first = _run(tmp_path, {"message": "Is tea better than coffee?", "session_id": "cli", "max_rounds": 1})
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() and "completed" in first.stderr
    second = _run(
        tmp_path, {"message": "And for sleep?", "session_id": "cli", "max_rounds": 1, "search": "always"}
    )
    assert second.returncode == 0, second.stderr
    bad = _run(tmp_path, {"message": "", "max_rounds": 9})
    assert (
        bad.returncode == 2
        and "invalid input of app 'debate'" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    asyncio.run(_two_turns_stored(tmp_path))


async def _two_turns_stored(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    async with Database.from_url(settings.resolved_database_url()) as db:
        conversation = await ConversationStore(db).get("default", "cli")
    assert conversation is not None
    assert [t.content for t in conversation.turns if t.role == "user"] == [
        "Is tea better than coffee?",
        "And for sleep?",
    ]
