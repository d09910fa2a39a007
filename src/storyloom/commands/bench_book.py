"""`storyloom bench book --json`: a whole book on the engine against the simulator (bench/book.py)."""

from __future__ import annotations

import json

import typer

from storyloom.errors import InputError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("book")
    def book(
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (stdout)."),
        chapters: int = typer.Option(20, help="Chapters of the book."),
        versions: int = typer.Option(2, help="Versions per chapter."),
        latency: float = typer.Option(1.0, help="Model time of every answer, seconds."),
        target_length: int = typer.Option(400, help="Target length of each chapter (words)."),
    ) -> None:
        """Wall ÷ critical path, tokens, cache hits, context size, length adherence, coverage of a book."""
        if not 3 <= chapters <= 500:
            raise InputError(f"--chapters must be between 3 and 500 (got {chapters}).")
        if not 1 <= versions <= 10:
            raise InputError(f"--versions must be between 1 and 10 (got {versions}).")
        if latency <= 0:
            raise InputError("--latency must be positive.")
        import asyncio

        from storyloom.bench.book import run_book_bench
        from storyloom.logs import configure_logging

        configure_logging(level="WARNING", json=False)
        report = asyncio.run(
            run_book_bench(
                chapters=chapters, versions=versions, latency_s=latency, target_length=target_length
            )
        )
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        typer.echo(
            f"{report['chapters_written']}/{report['chapters']} chapters, "
            f"wall {report['wall_s']}s over critical path {report['sum_critical_path_s']}s "
            f"= x{report['wall_over_critical_path']}, cache hits "
            f"{report['cache_hit_share']:.0%}, lengths within 10%: {report['length_within_10pct']}; "
            f"pass: {report['pass']}"
        )
