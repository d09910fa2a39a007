"""Settings for the process commands, with the storage flags applied and bad values as one sentence."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from storyloom.config import Settings
from storyloom.errors import ConfigError
from storyloom.validation import from_validation

__all__ = ["load_settings"]


def load_settings(*, data_dir: Path | None, database_url: str | None) -> Settings:
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise from_validation(exc, "settings", error=ConfigError) from exc
