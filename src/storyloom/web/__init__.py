"""The studio: a web UI served by the API process from files inside the package.

Plain ES modules and hand-written CSS, no JavaScript toolchain: there is nothing to build, so
nothing can be stale against its sources, nothing comes from a CDN (the studio works offline), and
the first load is a few tens of kilobytes (tests/web/test_web_assets.py keeps it under 300 KB
compressed). `/` answers the page; `/studio/...` the modules, styles and icons. Both are public
(api/auth.py): they hold no data, and every API call the page makes carries the key the user
signed in with.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PREFIX", "STATIC_DIR", "install_studio"]

ASSETS_PREFIX = "/studio"
STATIC_DIR = Path(str(files("storyloom.web") / "static"))
# The page always asks the server again (a new deploy is seen at once); assets may be cached
# briefly but are revalidated (ETag), so an upgrade never mixes old and new modules for long.
_PAGE_HEADERS = {"Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    """Static files that a browser revalidates instead of trusting a heuristic lifetime."""

    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def install_studio(app: FastAPI) -> None:
    """Mount the assets and answer `/` with the page."""
    app.mount(ASSETS_PREFIX, _Assets(directory=STATIC_DIR), name="studio-assets")
    index = STATIC_DIR / "index.html"

    async def studio() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    app.add_api_route("/", studio, methods=["GET"], include_in_schema=False)
