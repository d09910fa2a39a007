"""`storyloom bench tools`: debate conversations against a search tool under its own limits."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("tools")
    def tools_bench(
        conversations: int = typer.Option(500, min=1, max=5000, help="Debate conversations at once."),
        search_share: float = typer.Option(0.3, min=0.0, max=1.0, help="Share that searches (3 queries)."),
        calls_per_minute: int = typer.Option(100, min=1, help="The search tool's calls per minute."),
        max_concurrency: int = typer.Option(50, min=1, help="The search tool's calls at once."),
        workers: int = typer.Option(3, min=1, max=16, help="Worker processes sharing the limits."),
        ramp_s: float = typer.Option(30.0, min=0.0, help="Submissions spread over this many seconds."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Completed share, admitted tool calls per 60 s (vs the limit), cache and degraded shares."""
        from storyloom.bench.tools import ToolsBenchConfig, run_tools_bench

        result = run_tools_bench(
            ToolsBenchConfig(
                conversations=conversations,
                search_share=search_share,
                calls_per_minute=calls_per_minute,
                max_concurrency=max_concurrency,
                workers=workers,
                ramp_s=ramp_s,
            )
        )
        typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
        if not result["pass"]:
            raise typer.Exit(1)
