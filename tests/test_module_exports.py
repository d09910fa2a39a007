"""Every module of the package declares its public surface, and every declared name exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import storyloom

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(storyloom.__path__, "storyloom.")
    if not m.ispkg and not m.name.endswith(".env")  # alembic's env runs migrations on import
)


@pytest.mark.parametrize("name", MODULES)
def test_module_exports_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing objects: {missing}"
