"""/docs without a network: Swagger UI served from the installed `swagger-ui-bundle` package.

FastAPI's default page loads Swagger UI from a CDN, so on a machine without internet (or behind a
strict proxy) /docs is a blank page. The assets ship in a wheel on PyPI; we serve them ourselves.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install_docs"]

ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Mount the assets and the page (the app must be created with docs_url=None, redoc_url=None)."""
    import swagger_ui_bundle

    app.mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
