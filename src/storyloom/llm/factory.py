"""Build the `ModelClient` the application uses from settings (the only place that knows how)."""

from __future__ import annotations

from storyloom.config import Settings
from storyloom.llm.types import ModelClient

__all__ = ["build_client"]


def build_client(settings: Settings, *, sim_url: str | None = None) -> ModelClient:
    """The gateway over the configured deployments; for the `sim` profile the caller passes `sim_url`.

    Raises ConfigError (a UserError) when the settings or STORYLOOM_DEPLOYMENTS are wrong.
    """
    from storyloom.llm.gateway import Gateway

    return Gateway.from_settings(settings, sim_url=sim_url)
