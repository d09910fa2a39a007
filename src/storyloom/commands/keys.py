"""`storyloom keys create|list|revoke`: the API keys of `serve --auth`, in the service's database.

Whoever can run this against the database is the deployment's operator: there is no key needed to
make the first key. `create` prints the key once, alone on its last line (`| tail -1` in scripts);
only its SHA-256 is stored, so a lost key cannot be shown again, only revoked and replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    from storyloom.store.keys import KeyStore

__all__ = ["register"]

T = TypeVar("T")

_DATA_DIR = typer.Option(None, help="Directory of the embedded SQLite database (as for serve).")
_DATABASE_URL = typer.Option(None, help="sqlite+aiosqlite:///… or postgresql+asyncpg://…")


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="API keys for `serve --auth`: create, list, revoke.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @keys_app.command("create")
    def create(
        tenant: str = typer.Option(..., help="The tenant every request with this key acts for."),
        role: str = typer.Option("member", help="member (its own tenant) or admin (the operator)."),
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Create a key; it is printed once, alone on the last line, and never stored."""
        record, key = _run(data_dir, database_url, lambda store: store.create(tenant=tenant, role=role))
        typer.echo(
            f"created API key {record.prefix} for tenant {record.tenant!r} (role {record.role.value}); "
            "it is shown only now:"
        )
        typer.echo(key)

    @keys_app.command("list")
    def list_keys(
        tenant: str | None = typer.Option(None, help="Only this tenant's keys."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Every key's id, tenant, role, creation, revocation and last use (never the key)."""
        found = _run(data_dir, database_url, lambda store: store.list_keys(tenant=tenant))
        if as_json:
            for k in found:
                doc = {
                    "id": k.id,
                    "prefix": k.prefix,
                    "tenant": k.tenant,
                    "role": k.role.value,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                    "last_used_at": k.last_used_at,
                }
                typer.echo(json.dumps(doc))
            return
        rows = [("PREFIX", "TENANT", "ROLE", "CREATED", "REVOKED", "LAST USED")]
        rows += [
            (
                k.prefix,
                k.tenant,
                k.role.value,
                _when(k.created_at),
                _when(k.revoked_at),
                _when(k.last_used_at),
            )
            for k in found
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    @keys_app.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., metavar="ID_OR_PREFIX", help="As `keys list` shows it."),
        data_dir: Path | None = _DATA_DIR,
        database_url: str | None = _DATABASE_URL,
    ) -> None:
        """Revoke a key: running services refuse it within a second."""
        record = _run(data_dir, database_url, lambda store: store.revoke(key_id))
        typer.echo(
            f"revoked API key {record.prefix} of tenant {record.tenant!r} at {_when(record.revoked_at)}."
        )


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _run(data_dir: Path | None, database_url: str | None, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    """Open (and migrate) the service's database, run `action(KeyStore)`, close."""
    from storyloom import eventloop
    from storyloom.commands._settings import load_settings
    from storyloom.errors import ConfigError, StoreError
    from storyloom.store.database import Database
    from storyloom.store.keys import KeyStore

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def main() -> T:
        db = Database.from_url(settings.resolved_database_url(), pool_size=1)
        try:
            await db.migrate()
            return await action(KeyStore(db))
        finally:
            await db.close()

    try:
        return eventloop.run(main())
    except StoreError as exc:
        raise ConfigError(f"cannot use the database for API keys ({exc}).") from exc
