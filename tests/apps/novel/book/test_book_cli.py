"""`storyloom book ...` as an author runs it: subprocesses on one data directory, the in-process simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _book(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    return subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "book", *args, "--data-dir", str(cwd / "data")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_a_book_from_premise_to_epub(tmp_path: Path) -> None:
    made = _book(
        [
            "new",
            "Salt Road",
            "--premise",
            "A courier crosses a desert carrying salt.",
            "--chapters",
            "3",
            "--target-length",
            "200",
        ],
        tmp_path,
    )
    assert made.returncode == 0, made.stderr
    book_id = made.stdout.strip().splitlines()[-1]
    assert len(book_id) == 32 and "Traceback" not in made.stderr

    outline = json.loads(_book(["outline", book_id, "--json"], tmp_path).stdout)
    assert [c["number"] for c in outline] == [1, 2, 3] and all(c["summary"] for c in outline)

    wrote = _book(["write", "Salt Road", "--chapters", "1-2", "--versions", "2"], tmp_path)
    assert wrote.returncode == 0, wrote.stderr
    assert "completed: 2 chapters" in wrote.stdout and "chapter" in wrote.stderr  # live progress on stderr

    status = json.loads(_book(["status", book_id, "--json"], tmp_path).stdout)
    chapters = {c["number"]: c for c in status["chapters"]}
    assert set(chapters) == {1, 2, 3}
    assert chapters[1]["state"] == chapters[2]["state"] == "chosen" and chapters[3]["state"] == "outlined"
    assert all(chapters[n]["chosen_version"] in (1, 2) and chapters[n]["length"] > 0 for n in (1, 2))
    assert chapters[1]["cost_usd"] > 0 and {"title", "chosen_version", "length", "cost_usd"} <= set(
        chapters[3]
    )

    rewrote = _book(
        [
            "rewrite",
            book_id,
            "1",
            "--start",
            "0",
            "--end",
            "40",
            "--instruction",
            "more tension",
            "--candidates",
            "2",
            "--accept",
            "1",
            "--json",
        ],
        tmp_path,
    )
    assert rewrote.returncode == 0, rewrote.stderr
    assert len(json.loads(rewrote.stdout)["candidates"]) == 2
    after = json.loads(_book(["status", book_id, "--json"], tmp_path).stdout)["chapters"]
    assert after[0]["chosen_version"] == 3 and after[0]["memory_stale"] is False  # memory re-read
    assert after[1]["state"] == "stale" and "chapter 1" in after[1]["stale_reason"]

    out = tmp_path / "salt.epub"
    exported = _book(["export", book_id, "--format", "epub", "--out", str(out)], tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert out.read_bytes()[:2] == b"PK" and "not chosen yet: 3" in exported.stdout

    quality = json.loads(_book(["eval", book_id, "--json"], tmp_path).stdout)
    assert [c["number"] for c in quality["chapters"]] == [1, 2] and quality["trend"][
        "length_score"
    ] is not None
    memory = json.loads(_book(["memory", book_id, "--json"], tmp_path).stdout)
    assert [m["number"] for m in memory["chapters"]] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["write", "nope", "--chapters", "1-x"], "--chapters must be a number or a range"),
        (["write", "no such book", "--chapters", "1"], "there is no book 'no such book'"),
        (["export", "x", "--format", "pdf", "--out", "x.pdf"], "--format must be one of md, txt, epub, docx"),
        (["new", "T", "--premise", "p", "--chapters", "0"], "chapters"),
        (["new", "T", "--premise", "p", "--chapters", "3", "--lang", "fr"], "--lang must be en or zh"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _book(args, tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
