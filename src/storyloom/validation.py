"""Validation shared by every input: constraints whose JSON Schema says exactly what the server
checks, and `from_validation`, a pydantic `ValidationError` as one sentence a person can act on.

`NOT_BLANK` is a JSON Schema `pattern` for "has a character that is not whitespace", where
whitespace is exactly what `str.strip()` removes. `\\S` would not do: ECMA-262 (the schema's regex
dialect), Rust's regex (pydantic's) and Python disagree at the edges (U+001C..U+001F, U+0085,
U+FEFF), so the class spells Python's set out, character by character (a fuzzer holding the
schema must never see a valid value refused).

`from_validation` is used wherever outside data is validated (CLI input files, settings, deployment
and simulator documents, job inputs, chat messages), so every refusal reads the same way: what was
invalid, where, why, and how many other problems there are.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from storyloom.errors import InputError, UserError

__all__ = ["NOT_BLANK", "NOT_BLANK_SCHEMA", "PY_WHITESPACE", "from_validation", "not_a_bool", "not_blank"]

# Every character for which str.isspace() is true (a test walks all of Unicode to check it).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _escaped(chars: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in chars)


NOT_BLANK = f"[^{_escaped(PY_WHITESPACE)}]"
# For `Field(json_schema_extra=...)` beside a `not_blank` validator: the schema says it, the
# validator checks it with a sentence instead of pydantic's "should match pattern '[^\u0009...'".
NOT_BLANK_SCHEMA: dict[str, Any] = {"pattern": NOT_BLANK, "minLength": 1}


def not_blank(value: str, what: str) -> str:
    """`value` stripped; a ValueError naming `what` when nothing is left (pydantic makes it a 422)."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value.strip()


def not_a_bool(value: Any) -> Any:
    """For `field_validator(..., mode="before")` on integer fields: an integer as JSON Schema means
    it. pydantic's lax mode reads `true` as 1, and its strict mode refuses `5.0`, which JSON Schema
    counts as an integer; this refuses the one and keeps the other. (An `Annotated` validator
    would do it per type, but pydantic then loses `minimum`/`maximum` of an optional field.)"""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    return value


E = TypeVar("E", bound=UserError)


def from_validation(
    exc: ValidationError,
    what: str = "input",
    *,
    error: type[E] = InputError,  # type: ignore[assignment]
) -> E:
    """`invalid <what>: <field.path>: <message> (and N more problems).` as `error` (InputError, or
    ConfigError for settings and documents)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = exc.error_count() - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return error(f"invalid {what}: {where + ': ' if where else ''}{msg}{tail}.")
