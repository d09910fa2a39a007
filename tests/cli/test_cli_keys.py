"""`storyloom keys create|list|revoke` as a user runs them: real subprocesses on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _keys(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    return subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "keys", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_create_prints_the_key_last_list_never_shows_it_revoke_by_prefix(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    made = _keys("create", "--tenant", "alice", "--role", "admin", *data)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("slk_") and " " not in key
    other = _keys("create", "--tenant", "bob", *data).stdout.strip().splitlines()[-1]

    listed = _keys("list", *data)
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout and other not in listed.stdout
    assert key[:16] in listed.stdout  # the public prefix (slk_ + id) is how a key is named
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split() == ["PREFIX", "TENANT", "ROLE", "CREATED", "REVOKED", "LAST", "USED"]
    assert [r.split()[1:3] for r in rows] == [["alice", "admin"], ["bob", "member"]]

    as_json = [
        json.loads(line) for line in _keys("list", "--json", "--tenant", "bob", *data).stdout.splitlines()
    ]
    assert [d["tenant"] for d in as_json] == ["bob"] and as_json[0]["revoked_at"] is None
    assert set(as_json[0]) == {"id", "prefix", "tenant", "role", "created_at", "revoked_at", "last_used_at"}

    prefix = key[:16]
    revoked = _keys("revoke", prefix, *data)
    assert revoked.returncode == 0, revoked.stderr
    assert prefix in revoked.stdout and key not in revoked.stdout
    after = [json.loads(line) for line in _keys("list", "--json", *data).stdout.splitlines()]
    assert [d["revoked_at"] is not None for d in after] == [True, False]
    # by id too, and by the whole key (one that leaked), which no output repeats
    assert _keys("revoke", as_json[0]["id"], *data).returncode == 0
    third = _keys("create", "--tenant", "carol", *data).stdout.strip().splitlines()[-1]
    by_key = _keys("revoke", third, *data)
    assert by_key.returncode == 0 and third not in by_key.stdout + by_key.stderr
    assert third[:16] in by_key.stdout


def test_database_url_is_honoured(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'elsewhere' / 'keys.db'}"
    assert _keys("create", "--tenant", "carol", "--database-url", url).returncode == 0
    listed = _keys("list", "--json", "--database-url", url)
    assert [json.loads(line)["tenant"] for line in listed.stdout.splitlines()] == ["carol"]
    assert (tmp_path / "elsewhere" / "keys.db").exists()


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (("create", "--tenant", "a b"), "error: tenant 'a b' is not a valid name"),
        (("create", "--tenant", "alice", "--role", "root"), "error: role must be admin or member"),
        (("revoke", "0123456789ab"), "error: no API key with id"),
        (("revoke", "nonsense"), "error: that is not a key id"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path, args: tuple[str, ...], starts: str) -> None:
    done = _keys(*args, "--data-dir", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(starts) and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
