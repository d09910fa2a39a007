"""`storyloom write` as a user runs it: a subprocess on the default in-process simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _write(args: list[str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storyloom.cli", "write", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_write_default_sim_zh(tmp_path: Path) -> None:
    proc = _write(["林凡在青云山秘境中获得上古传承，却被宿敌赵天追杀。", "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "synthesis" not in proc.stdout and "wrote" in proc.stdout
    assert "v1 synthesis: done" in proc.stderr and "judge: done" in proc.stderr  # plain progress, no TTY
    md = (tmp_path / "out" / "chapter.md").read_text(encoding="utf-8")
    data = json.loads((tmp_path / "out" / "chapter.json").read_text(encoding="utf-8"))
    assert len(data["versions"]) == 2 and data["chosen"] in (1, 2) and data["judge"]["calls"] >= 2
    chosen = data["versions"][data["chosen"] - 1]
    assert chosen["text"].strip() in md and md.startswith("<!-- storyloom")
    assert chosen["length"] > 1000 and data["usage"]["completion_tokens"] > 0
    assert all(a["usage"]["completion_tokens"] > 0 for a in chosen["agents"] if a["calls"])


def test_write_yaml_input_en_one_version(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(
        "chapter_outline: Mara finds a map in her father's desk and follows it to Greywater.\n"
        "genre: mystery\nlanguage: en\ncharacters:\n  - name: Mara\n    role: protagonist\n"
        "    traits: [stubborn, curious]\n",
        encoding="utf-8",
    )
    proc = _write(["--input", "in.yaml", "--versions", "1", "--target-length", "300", "-o", "o"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "o" / "chapter.json").read_text(encoding="utf-8"))
    assert data["language"] == "en" and data["target_length"] == 300 and data["chosen_by"] == "only"
    assert 100 < data["versions"][0]["length"] < 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "outline"),
        (["   "], "outline is empty"),
        (["a story", "--versions", "0"], "--versions must be between 1 and 10"),
        (["a story", "--versions", "11"], "--versions must be between 1 and 10"),
        (["a story", "--max-parallel", "0"], "--max-parallel"),
        (["a story", "--lang", "fr"], "--lang"),
        (["a story", "--target-length", "5"], "target_length"),
        (["--input", "missing.yaml"], "cannot read the input file missing.yaml"),
        (
            ["--input", "bad.yaml"],
            "not valid YAML or JSON: expected ',' or ']', but got ':' at line 2, column 5",
        ),
        (["--input", "empty_outline.json"], "chapter_outline"),
        (["a story", "--profile", "nope"], "invalid settings: profile"),
        (["a story", "--profile", "deepseek"], "needs an API key"),
        (
            ["a story", "--base-url", "http://127.0.0.1:{port}/v1", "--model", "m"],
            "cannot reach the model provider at http://127.0.0.1",
        ),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "bad.yaml").write_text("chapter_outline: [unclosed\n  - : :", encoding="utf-8")
    (tmp_path / "empty_outline.json").write_text('{"chapter_outline": "", "genre": "x"}', encoding="utf-8")
    args = [a.replace("{port}", str(_free_port())) for a in args]
    proc = _write(args, tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0]
    assert not (tmp_path / "chapter.md").exists()
