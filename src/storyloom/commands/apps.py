"""`storyloom apps`: the installed apps, their job kinds, and any that failed to load."""

from __future__ import annotations

import json

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("apps")
    def apps(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
        """List the apps this installation runs (built-in and installed plug-ins)."""
        from storyloom.registry import installed_apps

        registry = installed_apps()
        rows = [
            {
                "name": a.name,
                "title": a.display_title,
                "kinds": list(a.kinds),
                "model": f"storyloom/{a.name}",
                "description": a.description,
            }
            for a in registry
        ]
        broken = [{"name": b.name, "target": b.target, "error": b.error} for b in registry.broken]
        if as_json:
            typer.echo(json.dumps({"apps": rows, "broken": broken}, ensure_ascii=False, indent=2))
            return
        for row in rows:
            typer.echo(f"{row['name']:<16} {row['title']}  (kinds: {', '.join(row['kinds'])})")
        for b in broken:
            typer.echo(f"{b['name']:<16} NOT LOADED from {b['target']}: {b['error']}", err=True)
