"""Reading a JSON or YAML document a person wrote, with the line and column of what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from storyloom.errors import InputError

__all__ = ["load_document", "parse_document"]


def parse_document(text: str, *, what: str, json_only: bool = False) -> Any:
    """JSON (or YAML, a superset) text as data; InputError names the line and column."""
    try:
        return json.loads(text) if json_only else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{what} is not valid YAML or JSON: {problem}{where}.") from exc


def load_document(path: Path, *, what: str | None = None) -> Any:
    """A file as data: `.json` is read as JSON, anything else as YAML (which reads JSON too)."""
    label = what or f"the input file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read {label}: {reason}.") from exc
    return parse_document(text, what=label, json_only=path.suffix.lower() == ".json")
