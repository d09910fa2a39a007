"""`storyloom bench openai`: the OpenAI-compatible front's added latency with 200 streaming clients."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("openai")
    def openai_bench(
        clients: int = typer.Option(200, min=1, max=5000, help="Concurrent streaming chat clients."),
        workers: str = typer.Option("2..2", help="Worker processes of the service (MIN..MAX)."),
        ttft_s: float = typer.Option(1.0, "--ttft-s", min=0.0, help="Simulated time to first token."),
        tokens_per_s: float = typer.Option(60.0, "--tokens-per-s", min=1.0, help="Simulated stream rate."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """First content token at the client minus first token of the answer step at the worker."""
        from storyloom.bench.openai import OpenAIBenchConfig, run_openai_bench

        result = run_openai_bench(
            OpenAIBenchConfig(clients=clients, workers=workers, ttft_s=ttft_s, tokens_per_s=tokens_per_s)
        )
        typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
        if not result["pass"]:
            raise typer.Exit(1)
