"""Structured logging: JSON lines with job, step and worker ids bound as context variables."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]


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
            *([add_static] if fixed else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
