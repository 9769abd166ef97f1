"""/docs: Swagger UI served by this server from the packaged bundle (works offline)."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

DOCS_ASSETS = "/docs/assets"


def mount_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the packaged bundle (swagger-ui-bundle), served by this server, so the
    page works on a machine without internet access (FastAPI's default loads it from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=base + app.openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{base}{DOCS_ASSETS}/favicon-32x32.png")
