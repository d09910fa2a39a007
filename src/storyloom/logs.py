"""Structured logging: JSON lines with job, step and worker ids bound as context variables.

No line ever carries an API key: the API logs no request headers, and as a second line of defence
every structlog line and every stdlib record (uvicorn's) passes through `redact`, which replaces
the secret part of anything shaped like a storyloom key (`slk_<id>_<secret>`) and any
`Bearer <token>`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from storyloom.tracing import trace_ids

__all__ = ["configure_logging", "get_logger", "redact"]

_KEY = re.compile(r"(slk_[0-9a-f]{12})_[A-Za-z0-9_\-]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with API keys and bearer tokens replaced (a key keeps its public `slk_<id>`)."""
    if "slk_" in text:
        text = _KEY.sub(rf"\1_{_REDACTED}", text)
    if "earer" in text:
        text = _BEARER.sub(rf"\1{_REDACTED}", text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth < 3 and isinstance(value, dict):
        return {
            k: _REDACTED if str(k).lower() == "authorization" else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if depth < 3 and isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def _redact_event(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for name, value in event.items():
        event[name] = _REDACTED if name.lower() == "authorization" else _redact_value(value)
    return event


class _RedactFilter(logging.Filter):
    """For stdlib records (uvicorn's): the formatted message and traceback, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(
    *, level: str = "INFO", json: bool = True, static: Mapping[str, Any] | None = None
) -> None:
    """Configure once at process start (CLI edge); libraries only call `get_logger`.

    `static`: fields on every line of this process (which of several API processes wrote it).
    """
    fixed = dict(static or {})

    def add_static(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.update(fixed)
        return event

    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            trace_ids,  # trace_id / span_id while a span is current (storyloom.tracing)
            *([add_static] if fixed else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactFilter) for f in target.filters):
            target.addFilter(_RedactFilter())


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
