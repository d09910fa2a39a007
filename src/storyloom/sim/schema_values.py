"""A JSON value valid against the (pydantic-style) JSON Schema an agent asked for.

Covers what pydantic emits: objects, arrays, strings (enum, const, min/maxLength), integers and
numbers (minimum/maximum, exclusive bounds), booleans, null, `anyOf`/`oneOf`/`allOf`, and local
`$ref`s into `$defs`/`definitions`. Strings are story-flavoured and use the prompt's names.
A property named `score` (or ending in `_score`) takes its value from `score_range` when given,
else from 50..95, always within the schema's bounds.
"""

from __future__ import annotations

import math
import random
from typing import Any

from storyloom.sim.prompt import PromptFacts
from storyloom.sim.story import Unit, sentence, story_text

__all__ = ["value_for_schema"]

_MAX_DEPTH = 8
# Without a `score_range` knob a score is drawn from here (within the schema's bounds): real judges
# rarely give a chapter under 50, and a 0..100 uniform would send most drafts into revision.
_DEFAULT_SCORES = (50, 95)
_LONG_TEXT_KEYS = ("content", "text", "chapter", "draft", "body", "story", "revised", "final")
_NAME_KEYS = ("name", "character", "protagonist", "speaker", "winner_name")
_PLACE_KEYS = ("place", "location", "setting", "scene_location")


def value_for_schema(
    schema: dict[str, Any],
    facts: PromptFacts,
    rng: random.Random,
    *,
    score_range: tuple[int, int] | None = None,
    long_text: tuple[int, Unit] = (120, "tokens"),
) -> Any:
    """Generate a value for `schema`; `long_text` (amount, unit) sizes fields like `content`."""
    gen = _Gen(schema, facts, rng, score_range, long_text)
    return gen.value(schema, key="", depth=0)


class _Gen:
    def __init__(
        self,
        root: dict[str, Any],
        facts: PromptFacts,
        rng: random.Random,
        score_range: tuple[int, int] | None,
        long_text: tuple[int, Unit],
    ) -> None:
        self.root = root
        self.facts = facts
        self.rng = rng
        self.score_range = score_range
        self.long_text = long_text

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < _MAX_DEPTH:
            ref = schema["$ref"]
            target: Any = self.root
            if isinstance(ref, str) and ref.startswith("#/"):
                for part in ref[2:].split("/"):
                    target = target.get(part, {}) if isinstance(target, dict) else {}
            merged = dict(target) if isinstance(target, dict) else {}
            merged.update({k: v for k, v in schema.items() if k != "$ref"})
            schema = merged
            seen += 1
        if "allOf" in schema and isinstance(schema["allOf"], list):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    sub = self.resolve(part)
                    props = {**merged.get("properties", {}), **sub.get("properties", {})}
                    required = [*merged.get("required", []), *sub.get("required", [])]
                    merged = {**sub, **merged, "properties": props, "required": required}
            schema = merged
        return schema

    def value(self, schema: Any, *, key: str, depth: int) -> Any:
        if not isinstance(schema, dict):
            return self.string({}, key)
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self.rng.choice(enum)
        for combo in ("anyOf", "oneOf"):
            options = schema.get(combo)
            if isinstance(options, list) and options:
                non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                return self.value((non_null or options)[0], key=key, depth=depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if depth >= _MAX_DEPTH and kind in ("object", "array"):
            return {} if kind == "object" else []
        if kind == "object":
            return self.obj(schema, depth)
        if kind == "array":
            return self.array(schema, key, depth)
        if kind == "integer":
            return self.integer(schema, key)
        if kind == "number":
            return self.number(schema, key)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema, key)

    def obj(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: self.value(sub, key=name, depth=depth + 1) for name, sub in props.items()}

    def array(self, schema: dict[str, Any], key: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 1 if depth < 3 else 0))
        high = int(schema.get("maxItems", max(low, 4)))
        count = self.rng.randint(low, max(low, min(high, max(low, 3))))
        items = schema.get("items", {"type": "string"})
        singular = key[:-1] if key.endswith("s") else key
        return [self.value(items, key=singular, depth=depth + 1) for _ in range(count)]

    def _bounds(self, schema: dict[str, Any], key: str, default: tuple[float, float]) -> tuple[float, float]:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        is_score = key == "score" or key.endswith("_score")
        if is_score and low is None and high is None:
            low, high = 0, 100
        lo = float(low) if low is not None else default[0]
        hi = float(high) if high is not None else max(lo, default[1])
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            lo += 1e-9
        if "exclusiveMaximum" in schema and "maximum" not in schema:
            hi -= 1e-9
        if is_score:
            want = self.score_range or _DEFAULT_SCORES
            new_lo, new_hi = max(lo, want[0]), min(hi, want[1])
            if new_lo <= new_hi:
                lo, hi = new_lo, new_hi
            elif self.score_range is not None:  # the knob lies outside the schema's bounds: nearest edge
                lo = hi = min(max(want[0], lo), hi)
        return lo, max(lo, hi)

    def integer(self, schema: dict[str, Any], key: str) -> int:
        lo, hi = self._bounds(schema, key, (0.0, 10.0))
        low, high = math.ceil(lo), math.floor(hi)
        return self.rng.randint(low, max(low, high))

    def number(self, schema: dict[str, Any], key: str) -> float:
        lo, hi = self._bounds(schema, key, (0.0, 1.0))
        if hi <= lo:
            return lo
        value = self.rng.uniform(lo, hi)
        rounded = round(value, 3)
        return rounded if lo <= rounded <= hi else value  # rounding must not cross an exclusive bound

    def string(self, schema: dict[str, Any], key: str) -> str:
        k = key.lower()
        facts, rng = self.facts, self.rng
        if any(k == n or k.endswith("_" + n) for n in _NAME_KEYS) and facts.names:
            text = rng.choice(facts.names)
        elif any(p in k for p in _PLACE_KEYS) and facts.places:
            text = rng.choice(facts.places)
        elif any(t in k for t in _LONG_TEXT_KEYS):
            text = story_text(facts, rng, *self.long_text)
        elif k in ("title", "chapter_title"):
            text = self.title()
        else:
            text = sentence(facts, rng)
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        while len(text) < low:
            text += sentence(facts, rng)
        if isinstance(high, int) and len(text) > high:
            text = text[:high]
        return text

    def title(self) -> str:
        names = self.facts.names or ["Mara"]
        if self.facts.language == "zh":
            place = self.rng.choice(self.facts.places or ["旧城"])
            return self.rng.choice((f"{place}之夜", f"{self.rng.choice(names)}的抉择", f"重返{place}"))
        place = self.rng.choice(self.facts.places or ["the Harbor"])
        return self.rng.choice(
            (f"Night in {place}", f"{self.rng.choice(names)}'s Choice", f"Return to {place}")
        )
