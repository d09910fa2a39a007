"""`from_validation`: a pydantic `ValidationError` as one sentence a person can act on.

Used wherever outside data is validated (CLI input files, settings, deployment and simulator
documents, job inputs, chat messages), so every refusal reads the same way: what was invalid,
where, why, and how many other problems there are.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from storyloom.errors import InputError, UserError

__all__ = ["from_validation"]

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
