"""Every model call goes through here: the HTTP client, and the gateway in front of it."""

from storyloom.llm.types import CallMeta, ChatRequest, ChatResult, DeltaCallback, Message, ModelClient, Usage

__all__ = ["CallMeta", "ChatRequest", "ChatResult", "DeltaCallback", "Message", "ModelClient", "Usage"]
