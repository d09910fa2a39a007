"""`storyloom bench chaos`: crashes, provider chaos, a restart and a soak, against `storyloom serve`."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]

_PHASES = ("clean", "crash", "chaos", "restart", "soak")


def register(app: typer.Typer) -> None:
    @app.command("chaos")
    def chaos(
        jobs: int = typer.Option(40, min=1, max=2000, help="Chapter jobs per phase (2 versions each)."),
        phases: str = typer.Option(",".join(_PHASES), help="Comma-separated phases to run, in order."),
        soak_minutes: float = typer.Option(30.0, min=0.5, help="Length of the soak phase."),
        tokens_per_s: float = typer.Option(20.0, min=1.0, help="The provider's pace (slow: ~100 s a job)."),
        kill_for_s: float = typer.Option(120.0, min=5.0, help="How long the crash phase kills workers."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Completion, model calls paid twice, breaker open time, exactly-once streams, flat memory."""
        from storyloom.bench.chaos import ChaosConfig, run_chaos_bench
        from storyloom.errors import InputError

        chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
        unknown = [p for p in chosen if p not in _PHASES]
        if unknown:
            raise InputError(f"unknown phase {unknown[0]!r}: use some of {', '.join(_PHASES)}.")
        cfg = ChaosConfig(
            jobs=jobs,
            phases=chosen,
            soak_s=soak_minutes * 60,
            tokens_per_s=tokens_per_s,
            kill_for_s=kill_for_s,
        )
        result = run_chaos_bench(cfg)
        typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
        if not result["pass"]:
            raise typer.Exit(1)
