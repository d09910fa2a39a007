"""Turn what a model answered into the pydantic model an agent asked for, or say clearly why not.

Models wrap JSON in prose and code fences, add trailing commas, comments and single quotes, and a
cut stream leaves brackets open. We try the cheap strict parse first, then each plausible JSON
span, then `json_repair` (a maintained repairer that closes truncated strings and brackets) on
those spans; the first candidate that validates wins. The caller decides what to do on failure
(retry with a stricter instruction, then degrade).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import json_repair
from pydantic import BaseModel, ValidationError

from storyloom.errors import OutputParseError

__all__ = ["Parsed", "json_candidates", "parse_structured", "prompt_schema"]

M = TypeVar("M", bound=BaseModel)
How = Literal["clean", "extracted", "repaired"]

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Parsed(Generic[M]):
    value: M
    how: How  # clean JSON, JSON found inside prose/fences, or JSON that needed repair


def json_candidates(text: str) -> list[str]:
    """Plausible JSON spans, most specific first: fenced blocks, the outermost braces, the whole text."""
    out: list[str] = []
    for m in _FENCE.finditer(text):
        block = m.group(1).strip()
        if block:
            out.append(block)
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        # A cut stream has no closing brace: keep everything from the first one for the repairer.
        out.append(text[start : end + 1] if end > start else text[start:])
    out.append(text.strip())
    return list(dict.fromkeys(out))  # ordered and without duplicates


def _objects(value: Any) -> list[dict[str, Any]]:
    """The dicts worth validating: the value, a single-key wrapper's content, a list's first dict."""
    if isinstance(value, dict):
        found = [value]
        if len(value) == 1:
            inner = next(iter(value.values()))
            if isinstance(inner, dict):
                found.append(inner)
        return found
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)][:1]
    return []


def _validate(model: type[M], value: Any) -> M | None:
    for obj in _objects(value):
        try:
            return model.model_validate(obj)
        except ValidationError:
            continue
    return None


def parse_structured(text: str, model: type[M]) -> Parsed[M]:
    """Parse `text` into `model`; raises OutputParseError (keeping the raw text) when nothing fits."""
    if not text or not text.strip():
        raise OutputParseError("the model returned an empty answer", raw=text)
    stripped = text.strip()
    candidates = json_candidates(text)
    for cand in candidates:
        try:
            value = json.loads(cand)
        except ValueError:
            continue
        found = _validate(model, value)
        if found is not None:
            return Parsed(found, "clean" if cand == stripped else "extracted")
    for cand in candidates:
        try:
            value = json_repair.loads(cand)
        except Exception:  # the repairer is best effort; any failure just means "not this span"
            continue
        found = _validate(model, value)
        if found is not None:
            return Parsed(found, "repaired")
    raise OutputParseError(f"no valid {model.__name__} JSON in the answer", raw=text)


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        # A "title" holding a string is schema metadata; one holding a dict is a property named title.
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def prompt_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without titles: small enough to put in every prompt."""
    schema: dict[str, Any] = _strip_titles(model.model_json_schema())
    if "$defs" in schema:
        raise ValueError(f"{model.__name__} must be flat (no $defs) to be put into prompts")
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["required"] = list(schema.get("properties", {}))  # ask for everything, accept less
    return schema
