"""The database layer: one schema and engine setup for SQLite (embedded) and PostgreSQL."""

from storyloom.store.database import Database

__all__ = ["Database"]
