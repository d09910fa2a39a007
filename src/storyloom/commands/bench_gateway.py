"""`storyloom bench gateway`: the LLM gateway under quota, tenants, a kill -9 and a failing deployment."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("gateway")
    def gateway(
        duration_s: float = typer.Option(150.0, "--duration-s", min=5, help="Saturation phase length."),
        outage_s: float = typer.Option(30.0, "--outage-s", min=3, help="How long deployment B answers 5xx."),
        workers: int = typer.Option(3, min=1, max=16, help="Worker processes."),
        redis_url: str | None = typer.Option(None, "--redis-url", help="Share limits through Redis."),
        tokens_per_s: float = typer.Option(7500.0, "--tokens-per-s", min=100, help="TPM quota as a rate."),
        window_s: float | None = typer.Option(None, "--window-s", min=1, help="Quota window (default 60)."),
        kill: bool = typer.Option(True, "--kill/--no-kill", help="SIGKILL one worker half-way."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Saturate a simulated quota from several processes and print goodput, fairness, overshoot."""
        from storyloom.bench.gateway.runner import BenchOptions, run_gateway_bench

        result = run_gateway_bench(
            BenchOptions(
                duration_s=duration_s,
                outage_s=outage_s,
                workers=workers,
                redis_url=redis_url,
                tokens_per_s=tokens_per_s,
                window_s=window_s,
                kill=kill,
            )
        )
        if as_json:
            typer.echo(json.dumps(result))
        else:
            from rich import print_json

            print_json(data=result)
        if not result["pass"]:
            raise typer.Exit(1)
