"""Prose answers: streamed text, kept when a stream is cut, retried once when empty."""

from __future__ import annotations

import re

from storyloom.agents.call import AgentCall
from storyloom.errors import OutputParseError, StreamCutError
from storyloom.llm.types import Message

__all__ = ["ask_text", "clean_prose"]

_FENCED_TEXT = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def clean_prose(text: str) -> str:
    """The text without surrounding whitespace or a code fence some models wrap prose in."""
    text = text.strip()
    m = _FENCED_TEXT.match(text)
    return m.group(1).strip() if m else text


async def ask_text(
    call: AgentCall, messages: list[Message], *, max_tokens: int | None, stream: bool = True
) -> str:
    """Prose. A cut stream keeps its partial text (and says so); an empty answer is retried once.

    Raises OutputParseError when both answers are empty, ProviderError when the gateway gave up.
    """
    for attempt in range(2):
        try:
            text = clean_prose(await call.chat(messages, max_tokens=max_tokens, stream=stream))
        except StreamCutError as exc:
            text = clean_prose(exc.partial_text)
            if text:
                call.run.degraded = f"stream cut, kept {len(text)} characters of partial text"
                return text
        if text:
            return text
        call.run.notes.append(f"attempt {attempt + 1}: empty answer")
    raise OutputParseError("the model returned an empty answer twice")
