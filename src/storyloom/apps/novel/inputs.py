"""Reading a NovelInput from a JSON or YAML file, with one clear sentence for every way it can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from storyloom.apps.novel.models import NovelInput, input_error
from storyloom.documents import load_document
from storyloom.errors import InputError

__all__ = ["load_novel_input", "novel_input_from"]


def novel_input_from(data: Any, *, what: str, overrides: dict[str, Any] | None = None) -> NovelInput:
    """Validate a mapping (a NovelInput, or the API's {"novel_input": {...}}) with overrides applied."""
    if isinstance(data, dict) and isinstance(data.get("novel_input"), dict):
        data = data["novel_input"]
    if not isinstance(data, dict):
        raise InputError(f"{what} must hold a mapping with at least chapter_outline.")
    merged = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return NovelInput.model_validate(merged)
    except ValidationError as exc:
        raise input_error(exc, what) from exc


def load_novel_input(path: Path, *, overrides: dict[str, Any] | None = None) -> NovelInput:
    """A NovelInput from `path` (.json is JSON, anything else YAML, which also reads JSON)."""
    data = load_document(path)
    return novel_input_from(data, what=f"input file {path}", overrides=overrides)
