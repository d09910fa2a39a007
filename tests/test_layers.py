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


def test_the_cli_does_not_import_prometheus_client_before_serve_configures_it() -> None:
    """prometheus_client chooses in-process or multiprocess storage when first imported; `serve`
    sets PROMETHEUS_MULTIPROC_DIR after the CLI is loaded, and an earlier import hid every
    worker's metrics from the API's /metrics."""
    import subprocess
    import sys

    code = "import sys, storyloom.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
