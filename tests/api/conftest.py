"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storyloom.api.services import ApiOptions
from support.api_server import Keys, Served, serve_app


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_app(tmp_path) as served:
        yield served


@pytest.fixture
async def authed(tmp_path: Path) -> AsyncIterator[tuple[Served, Keys]]:
    """The API with authentication on, and keys of tenants alice and bob, an admin and a revoked one."""
    async with serve_app(tmp_path, ApiOptions(auth=True, heartbeat_s=0.5)) as served:
        yield served, await Keys.make(served.db)
