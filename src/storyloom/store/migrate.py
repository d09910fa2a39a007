"""Alembic, run programmatically on a connection we already hold (scripts ship in the package).

The engine's tables have one chain of revisions (`migrations/versions`, version table
`alembic_version`); each app with tables has its own chain in its own folder and its own version
table (`alembic_version_<app>`), so an app is added or removed without touching the engine's
history, and a process that loads no app can still migrate the engine's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

__all__ = ["AppMigrations", "alembic_config", "upgrade_to_head"]

_SCRIPTS = Path(__file__).with_name("migrations")

AppMigrations = tuple[str, Path]
"""(app name, folder of its revision files)."""


def alembic_config(
    connection: Connection | None = None,
    *,
    versions: Path | None = None,
    version_table: str = "alembic_version",
) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))  # one env.py for every chain
    cfg.set_main_option("path_separator", "os")
    if versions is not None:
        cfg.set_main_option("version_locations", str(versions))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = version_table
    return cfg


def upgrade_to_head(connection: Connection, apps: Sequence[AppMigrations] = ()) -> None:
    """Run inside `AsyncConnection.run_sync`: the caller owns the transaction and its lock. The
    engine's chain first (apps' tables may refer to it), then each app's."""
    command.upgrade(alembic_config(connection), "head")
    for name, folder in apps:
        cfg = alembic_config(connection, versions=folder, version_table=f"alembic_version_{name}")
        command.upgrade(cfg, "heads")
