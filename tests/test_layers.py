"""The engine never names an app: apps are plug-ins found through the registry, so a user's app
needs no edit in `src/storyloom/`, and removing an app cannot break the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import storyloom

ROOT = Path(storyloom.__file__).parent
ENGINE_PARTS = ("flow", "agents", "llm", "limits", "tools", "store", "jobs", "serve", "api", "web", "sim")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(("." * node.level) + node.module)
    return names


@pytest.mark.parametrize("part", ENGINE_PARTS)
def test_engine_parts_import_no_app(part: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / part).rglob("*.py"))
        for name in _imports(path)
        if name.startswith("storyloom.apps") or name.lstrip(".").startswith("apps")
    ]
    assert offenders == []
