"""Build the `ModelClient` the application uses from settings (the only place that knows how)."""

from __future__ import annotations

from storyloom.config import Settings
from storyloom.errors import ConfigError
from storyloom.llm.client import HttpModelClient
from storyloom.llm.types import ModelClient

__all__ = ["build_client"]


def build_client(settings: Settings, *, sim_url: str | None = None) -> ModelClient:
    """The client for the configured provider; for the `sim` profile the caller passes `sim_url`."""
    provider = settings.provider()
    base_url = provider.base_url or sim_url
    if base_url is None:
        raise ConfigError("the sim profile needs a running simulator: pass its URL (sim_url).")
    return HttpModelClient(
        base_url,
        provider.api_key,
        connect_timeout_s=provider.connect_timeout_s,
        ttft_timeout_s=provider.ttft_timeout_s,
        total_timeout_s=provider.total_timeout_s,
        name=provider.profile,
    )
