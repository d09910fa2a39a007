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
from typing import TYPE_CHECKING, Any

import typer

from storyloom.errors import InputError

if TYPE_CHECKING:
    pass

__all__ = ["register"]


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

        from storyloom.bench.chapter import run_chapter_bench

        report = asyncio.run(
            run_chapter_bench(
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


def _print_human(report: dict[str, Any]) -> None:
    for n, run in report["runs"].items():
        typer.echo(
            f"{n} version(s): wall {run['wall_s']:.2f}s, critical path {run['critical_path_model_s']:.2f}s "
            f"(x{run['wall_over_critical_path']:.3f}), serial {run['serial_model_s']:.2f}s, "
            f"judge {run['judge_s']:.2f}s ({run['judge_calls']} calls)"
        )
    key = next(k for k in report if k.startswith("versions_") and k.endswith("_over_1"))
    typer.echo(f"{key}: {report[key]:.3f}; pass: {report['pass']}")
