"""/docs: the OpenAPI page with Swagger UI's files served by the service itself, so it renders
on a machine with no network (FastAPI's own page loads them from a CDN).

The files are swagger-ui-dist from the npm registry, pinned in web/package-lock.json and copied
into api/page/static/vendor/ by `make web`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Response
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html

from api.core import Core
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

VENDOR = "/page/vendor"


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add /docs and Swagger UI's OAuth2 redirect page."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()
