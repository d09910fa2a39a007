"""`storyloom bench chapter --json`: how close the chapter flow runs to its critical path.

The simulator runs in a separate process (`storyloom sim --config`), each agent with its own model
name and a fixed answer time (default 1 s, Scene 2 s), so every second of model time is known.
We write a chapter with 1 version and with N versions and compare, per run: wall time (the judge
phase excluded and reported apart), the critical-path model time computed from the DAG and the
model times measured per step, and the serial sum. The revise loop is made deterministic by the
simulator's quality scores: 80–100 (≥ the threshold 70, so no round runs) by default, or 0–10 with
`--revise-rounds K` (K rounds always run, and count in the critical path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from storyloom.errors import ConfigError, InputError

if TYPE_CHECKING:
    import subprocess

    from storyloom.llm.types import ModelClient

__all__ = ["register"]

_WALL_OVER_CRITICAL_MAX = 1.05
_N_OVER_ONE_MAX = 1.10


def register(app: typer.Typer) -> None:
    @app.command("chapter")
    def chapter(
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (stdout)."),
        latency: float = typer.Option(1.0, help="Model time of each agent's answer, seconds."),
        scene_latency: float = typer.Option(2.0, help="Model time of the Scene agent, seconds."),
        versions: int = typer.Option(3, help="Versions of the multi-version run (compared with 1)."),
        revise_rounds: int = typer.Option(0, help="Force this many revise rounds (0: none)."),
        lang: str = typer.Option("zh", help="zh or en."),
        target_length: int = typer.Option(1500, help="Target length of the chapter."),
    ) -> None:
        """Wall time vs critical-path and serial model time, 1 vs N versions (simulator in a subprocess)."""
        if not 2 <= versions <= 10:
            raise InputError(f"--versions must be between 2 and 10 (got {versions}).")
        if not 0 <= revise_rounds <= 5:
            raise InputError(f"--revise-rounds must be between 0 and 5 (got {revise_rounds}).")
        if latency <= 0 or scene_latency <= 0:
            raise InputError("--latency and --scene-latency must be positive.")
        if lang not in ("zh", "en"):
            raise InputError(f"--lang must be zh or en, not {lang!r}.")
        import asyncio

        report = asyncio.run(
            _bench(
                latency=latency,
                scene_latency=scene_latency,
                versions=versions,
                revise_rounds=revise_rounds,
                lang=lang,
                target_length=target_length,
            )
        )
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_human(report)


def _sim_config(latency: float, scene_latency: float, revise_rounds: int) -> dict[str, Any]:
    from storyloom.apps.novel.agents import AGENTS

    scores = [0, 10] if revise_rounds else [80, 100]
    models: dict[str, Any] = {f"bench-{a}": {"latency_s": latency, "ttft_s": 0.0} for a in AGENTS}
    models["bench-scene"]["latency_s"] = scene_latency
    models["bench-quality"]["score_range"] = scores
    return {
        "seed": 7,
        # Fast streaming so the fixed latency is the whole cost; the warm-up model answers at once.
        "default": {"ttft_s": 0.0, "tokens_per_s": 1_000_000.0, "answer_tokens": 4},
        "models": models,
        "chunk_interval_s": 0.02,
        "chunk_tokens": 64,
    }


def _start_sim(config: dict[str, Any], workdir: Path) -> tuple[subprocess.Popen[str], str]:
    import subprocess
    import sys
    import threading

    path = workdir / "sim.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyloom.cli", "sim", "--port", "0", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout=30)
    url = first[0].strip() if first else ""
    if not url.startswith("http"):
        proc.kill()
        proc.wait()
        raise ConfigError("the benchmark's simulator process did not start (no URL printed within 30 s).")
    return proc, url


async def _wait_ready(client: ModelClient) -> None:
    """Until the simulator answers a real request (also warms the connection pool)."""
    import asyncio

    from storyloom.errors import ProviderError
    from storyloom.llm.types import ChatRequest

    for _ in range(100):
        try:
            await client.chat(ChatRequest(model="warmup", messages=[{"role": "user", "content": "hi"}]))
            return
        except ProviderError:
            await asyncio.sleep(0.1)
    raise ConfigError("the benchmark's simulator did not answer within 10 s.")


async def _bench(
    *, latency: float, scene_latency: float, versions: int, revise_rounds: int, lang: str, target_length: int
) -> dict[str, Any]:
    import tempfile

    from storyloom.apps.novel.agents import AGENTS, AgentModels
    from storyloom.apps.novel.models import ChapterRequest, NovelInput
    from storyloom.llm.client import HttpModelClient

    models = AgentModels(default="bench-default", overrides={a: f"bench-{a}" for a in AGENTS})
    outline = (
        "林凡在青云山秘境中获得上古传承，却被宿敌赵天追杀。"
        if lang == "zh"
        else "Mara finds a map in her father's desk and follows it to Greywater."
    )
    novel = NovelInput(chapter_outline=outline, language=lang, target_length=target_length)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="storyloom-bench-") as tmp:
        proc, url = _start_sim(_sim_config(latency, scene_latency, revise_rounds), Path(tmp))
        client = HttpModelClient(url, None, connect_timeout_s=5, ttft_timeout_s=60, total_timeout_s=120)
        try:
            await _wait_ready(client)
            runs = {}
            for n in (1, versions):
                request = ChapterRequest(
                    input=novel, versions=n, max_parallel=n, max_revise_rounds=revise_rounds
                )
                runs[str(n)] = await _one_run(request, client, models)
        finally:
            await client.aclose()
            proc.terminate()
            proc.wait(10)
    one, many = runs["1"], runs[str(versions)]
    n_over_one = round(many["wall_s"] / one["wall_s"], 4)
    worst = max(one["wall_over_critical_path"], many["wall_over_critical_path"])
    return {
        "bench": "chapter",
        "simulator": "separate process (storyloom sim --config), one model name per agent",
        "latency_s": {"each_agent": latency, "scene": scene_latency},
        "revise": (
            f"{revise_rounds} forced rounds (quality scores 0-10), counted in the critical path"
            if revise_rounds
            else "no rounds: the simulator scores quality 80-100, above the threshold 70"
        ),
        "wall_excludes": "the judge phase (reported as judge_s)",
        "runs": runs,
        f"versions_{versions}_over_1": n_over_one,
        "targets": {
            "wall_over_critical_path_max": _WALL_OVER_CRITICAL_MAX,
            f"versions_{versions}_over_1_max": _N_OVER_ONE_MAX,
        },
        "pass": worst <= _WALL_OVER_CRITICAL_MAX and n_over_one <= _N_OVER_ONE_MAX,
    }


async def _one_run(request: Any, client: ModelClient, models: Any) -> dict[str, Any]:
    import time
    import uuid

    from storyloom.apps.novel.chapter import write_chapter
    from storyloom.apps.novel.timing import model_times

    start = time.perf_counter()
    result = await write_chapter(
        request, client=client, models=models, run_id=f"bench-{uuid.uuid4().hex[:8]}"
    )
    total = time.perf_counter() - start
    times = model_times(result)
    judge_wall = result.step_times.get("judge", 0.0)
    wall = total - judge_wall
    failed = [v.index for v in result.versions if not v.ok]
    degraded = sorted({a for v in result.versions for a in v.degraded})
    return {
        "versions": request.versions,
        "wall_s": round(wall, 4),
        "critical_path_model_s": times.critical_path_s,
        "serial_model_s": times.serial_s,
        "wall_over_critical_path": round(wall / times.critical_path_s, 4),
        "serial_over_wall": round(times.serial_s / wall, 4),
        "judge_s": round(judge_wall, 4),
        "judge_calls": result.judge.calls if result.judge else 0,
        "total_wall_s": round(total, 4),
        "model_calls": sum(a.calls for v in result.versions for a in v.agents) + 1,
        "failed_versions": failed,
        "degraded_agents": degraded,
    }


def _print_human(report: dict[str, Any]) -> None:
    for n, run in report["runs"].items():
        typer.echo(
            f"{n} version(s): wall {run['wall_s']:.2f}s, critical path {run['critical_path_model_s']:.2f}s "
            f"(x{run['wall_over_critical_path']:.3f}), serial {run['serial_model_s']:.2f}s, "
            f"judge {run['judge_s']:.2f}s ({run['judge_calls']} calls)"
        )
    key = next(k for k in report if k.startswith("versions_") and k.endswith("_over_1"))
    typer.echo(f"{key}: {report[key]:.3f}; pass: {report['pass']}")
