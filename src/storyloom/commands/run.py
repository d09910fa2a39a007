"""`storyloom run NAME --input FILE|JSON`: run any app's job here, watching every step live.

The job runs on the same durable engine as `serve` (the data dir's database), so it is listed by
`storyloom jobs` afterwards; with the default sim profile the simulator runs in this process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from storyloom.errors import InputError

__all__ = ["parse_input", "register"]


def parse_input(value: str) -> dict[str, Any]:
    """`--input` is a file (JSON or YAML) or inline JSON/YAML text."""
    from storyloom.documents import load_document, parse_document

    path = Path(value)
    stripped = value.strip()
    if not stripped.startswith(("{", "[")) and path.exists():
        data = load_document(path)
    else:
        data = parse_document(value, what="--input")
    if not isinstance(data, dict):
        raise InputError("--input must hold one object (a mapping of the app's input fields).")
    return data


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        name: str = typer.Argument(..., help="The app (see `storyloom apps`)."),
        input_value: str = typer.Option(
            ..., "--input", "-i", help="Input as a JSON/YAML file or inline JSON."
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Write the job's result JSON here."),
        priority: int = typer.Option(5, min=0, max=9, help="0..9, higher runs first."),
        data_dir: Path | None = typer.Option(None, help="Directory of the embedded database."),
        database_url: str | None = typer.Option(None, help="sqlite+aiosqlite:///… or postgresql+asyncpg://…"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ) -> None:
        """Run one job of app NAME and print its answer; the result JSON goes to --out."""
        import asyncio
        import contextlib

        from rich.console import Console

        from storyloom.commands._settings import load_settings
        from storyloom.progress import LiveSteps, PlainSteps
        from storyloom.registry import installed_apps
        from storyloom.runner import job_payload
        from storyloom.serve.local import run_local_job

        registry = installed_apps()
        target = registry.get(name)
        payload = job_payload(target, parse_input(input_value))
        settings = load_settings(data_dir=data_dir, database_url=database_url)
        settings.provider()
        console = Console(stderr=True)
        view: Any
        if quiet:
            view = contextlib.nullcontext(None)
        elif console.is_terminal:
            view = LiveSteps(f"storyloom run {name}", console=console)
        else:
            view = PlainSteps(sys.stderr)
        with view as display:
            job = asyncio.run(
                run_local_job(
                    settings,
                    registry,
                    target.name,
                    payload,
                    priority=priority,
                    on_event=display.emit if display is not None else None,
                )
            )
        envelope = job.result or {}
        if out is not None:
            try:
                out.write_text(json.dumps(envelope, ensure_ascii=False, indent=2), encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot write {out}: {exc.strerror or exc}.") from exc
        if job.status.value != "completed":
            typer.echo(f"job {job.id} {job.status.value}: {job.error}", err=True)
            raise typer.Exit(1)
        for d in envelope.get("degraded") or []:
            typer.echo(f"degraded: {d['step']}: {d['reason']}", err=True)
        typer.echo(envelope.get("text") or "")
        usage = envelope.get("usage") or {}
        typer.echo(
            f"job {job.id} completed: {usage.get('calls', 0)} model calls, "
            f"{usage.get('total_tokens', 0)} tokens, ${float(usage.get('cost_usd') or 0):.4f}",
            err=True,
        )
