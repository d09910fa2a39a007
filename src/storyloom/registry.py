"""`AppRegistry`: the apps this installation runs, found through entry points.

An installed package declares `[project.entry-points."storyloom.apps"] NAME = "module:app"`;
storyloom's own apps are declared the same way in its pyproject, and, for a source tree used
without installing it, also found as the sub-packages of `storyloom.apps` that export `app`. The
engine's parts (jobs, api, serve) never look apps up themselves: the CLI builds one registry and
hands it to the workers, the API and its own commands.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from storyloom.app import App
from storyloom.errors import ConfigError, NotFoundError
from storyloom.logs import get_logger

__all__ = [
    "APPS_VARIABLE",
    "ENTRY_POINT_GROUP",
    "AppNotFoundError",
    "AppRegistry",
    "BrokenApp",
    "installed_apps",
]

APPS_VARIABLE = "STORYLOOM_APPS"  # more apps by target, e.g. "mypkg.apps:app,tools.demo:app"

ENTRY_POINT_GROUP = "storyloom.apps"
_BUILTIN_PACKAGE = "storyloom.apps"
_log = get_logger("storyloom.registry")


class AppNotFoundError(NotFoundError):
    """No app of that name is installed (HTTP 404, CLI exit 2)."""


@dataclass(frozen=True, slots=True)
class BrokenApp:
    """An entry point that could not be loaded: shown by `storyloom apps`, skipped elsewhere."""

    name: str
    target: str
    error: str


class AppRegistry:
    """Apps by name, and every job kind they run."""

    def __init__(self, apps: Iterable[App[Any]] = (), *, broken: Iterable[BrokenApp] = ()) -> None:
        self._apps: dict[str, App[Any]] = {}
        self._kinds: dict[str, App[Any]] = {}
        self.broken = list(broken)
        for app in apps:
            self.add(app)

    def add(self, app: App[Any]) -> None:
        if app.name in self._apps:
            raise ConfigError(f"two apps are named {app.name!r}")
        for kind in app.kinds:
            if kind in self._kinds:
                raise ConfigError(
                    f"job kind {kind!r} of app {app.name!r} is taken by {self._kinds[kind].name!r}"
                )
        self._apps[app.name] = app
        for kind in app.kinds:
            self._kinds[kind] = app

    @classmethod
    def discover(cls, *, extra: Iterable[App[Any]] = (), targets: Iterable[str] = ()) -> AppRegistry:
        """Every installed app (entry points, then the built-in packages), plus `extra` and the
        apps named by `targets` ("module:attribute", loaded first: they may replace nothing)."""
        registry = cls()
        for app in extra:
            registry.add(app)
        for target in targets:
            module_name, _, attr = target.strip().partition(":")
            try:
                loaded = getattr(importlib.import_module(module_name), attr or "app")
            except Exception as exc:
                registry._broken(target, target, exc)
                continue
            registry._add_loaded(target, target, loaded)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in registry:
                continue
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken plug-in must not take the service down
                registry._broken(ep.name, ep.value, exc)
                continue
            registry._add_loaded(ep.name, ep.value, loaded)
        package = importlib.import_module(_BUILTIN_PACKAGE)
        for info in pkgutil.iter_modules(package.__path__, f"{_BUILTIN_PACKAGE}."):
            short = info.name.rsplit(".", 1)[-1]
            if not info.ispkg or short in registry or short.startswith("_"):
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception as exc:
                registry._broken(short, info.name, exc)
                continue
            found = getattr(module, "app", None)
            if found is not None:
                registry._add_loaded(short, f"{info.name}:app", found)
        return registry

    def _add_loaded(self, name: str, target: str, app: object) -> None:
        if not isinstance(app, App):
            self._broken(name, target, TypeError(f"{target} is a {type(app).__name__}, not a storyloom.App"))
            return
        try:
            self.add(app)
        except ConfigError as exc:
            self._broken(name, target, exc)

    def _broken(self, name: str, target: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self.broken.append(BrokenApp(name, target, error))
        _log.warning("app_not_loaded", app=name, target=target, error=error)

    # -- lookups ---------------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._apps

    def __iter__(self) -> Iterator[App[Any]]:
        return iter(sorted(self._apps.values(), key=lambda a: a.name))

    def __len__(self) -> int:
        return len(self._apps)

    @property
    def names(self) -> list[str]:
        return sorted(self._apps)

    def get(self, name: str) -> App[Any]:
        app = self._apps.get(name)
        if app is None:
            known = ", ".join(self.names) or "none"
            raise AppNotFoundError(f"there is no app {name!r} (installed: {known}).")
        return app

    def app_of_kind(self, kind: str) -> App[Any] | None:
        """The app that runs job kind `kind` (None for the engine's own kinds)."""
        return self._kinds.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def migrations(self) -> list[tuple[str, Path]]:
        """(app name, folder of its alembic revisions) for every app with tables: `Database.migrate`."""
        return [(app.name, app.tables.migrations) for app in self if app.tables is not None]


def installed_apps(environ: Mapping[str, str] | None = None) -> AppRegistry:
    """The registry a process of `storyloom` uses: every installed app plus those `STORYLOOM_APPS`
    names (read here, at the edge: every command and child process builds its registry this way,
    so a worker runs exactly the apps its API serves)."""
    import os

    env = os.environ if environ is None else environ
    targets = [t for t in env.get(APPS_VARIABLE, "").split(",") if t.strip()]
    return AppRegistry.discover(targets=targets)
