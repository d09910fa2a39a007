"""`storyloom bench queue`: no-op jobs per second through submit -> claim -> complete, beside SAQ and arq."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def _ints(text: str, what: str) -> tuple[int, ...]:
    from storyloom.errors import InputError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 or v > 32 for v in values):
        raise InputError(f"--{what} must be a comma-separated list of numbers from 1 to 32, not {text!r}.")
    return values


def register(app: typer.Typer) -> None:
    @app.command("queue")
    def bench_queue(
        jobs: int = typer.Option(5000, min=10, max=1_000_000, help="No-op jobs per run."),
        workers: str = typer.Option("1,2,4", help="Worker process counts, comma-separated."),
        backends: str = typer.Option("sqlite,postgres", help="storyloom's databases: sqlite, postgres."),
        peers: str = typer.Option("saq,arq", help="Other queues to run beside it (saq, arq); '' for none."),
        peer_python: str = typer.Option(
            "/tmp/benchq/bin/python", help="The benchmark venv's python, where the peers are installed."
        ),
        repeats: int = typer.Option(3, min=1, max=9, help="Runs per row; the row is their median."),
        concurrency: int = typer.Option(100, min=1, max=10_000, help="Jobs at once per worker process."),
        submitters: int = typer.Option(50, min=1, max=1000, help="Concurrent submitting callers."),
        log_level: str = typer.Option("INFO", help="storyloom workers' log level (INFO: as deployed)."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    ) -> None:
        """Jobs/s, CPU-s per 1,000 jobs and jobs per CPU-second, per system, backend and worker count."""
        from storyloom.bench.queue import QueueBenchConfig, run_queue_bench
        from storyloom.errors import InputError

        chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
        if not chosen or any(b not in ("sqlite", "postgres") for b in chosen):
            raise InputError(f"--backends must name sqlite and/or postgres, not {backends!r}.")
        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise InputError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}.")
        result = run_queue_bench(
            QueueBenchConfig(
                jobs=jobs,
                workers=_ints(workers, "workers"),
                backends=chosen,
                peers=tuple(p.strip() for p in peers.split(",") if p.strip()),
                peer_python=peer_python,
                repeats=repeats,
                concurrency=concurrency,
                submitters=submitters,
                log_level=log_level.upper(),
            )
        )
        if as_json:
            typer.echo(json.dumps(result))
        else:
            for row in result["rows"]:
                typer.echo(
                    f"{row['system']:10} {row['backend']:20} {row['workers']} workers  "
                    f"{row['jobs_per_s']:8.1f} jobs/s  {row['cpu_s_per_1000_jobs']:6.3f} CPU-s/1000  "
                    f"{row['jobs_per_cpu_s']} jobs/CPU-s"
                )
            typer.echo(json.dumps(result["comparison"], indent=2))
            for note in result["notes"]:
                typer.echo(f"note: {note}")
