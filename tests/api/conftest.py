"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.api_server import Served, serve_app


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_app(tmp_path) as served:
        yield served
