"""The page for people at /, and what inference on their device needs.

  GET /                  the page (api/page/): a form generated from the served model's schema,
                         batch scoring of a CSV, and the same model run in the browser
  GET /page/...          its scripts and styles (api/page/static), and the vendored
                         onnxruntime-web and Swagger UI (`make web`); revalidated by ETag
  GET /model/onnx        the primary variant's ONNX graph (``?variant=NAME`` for another)
  GET /model/preprocess  its preprocessing spec (preprocess.json)

Both are the very bytes of the md5-verified artifact the server loaded. ETag is the artifact's
md5 (the version dvc.lock pins) and X-Content-SHA256 the SHA-256 of the body, which the page
checks before it runs anything. With ``?md5=`` naming the served md5 the URL names one
version, so it is cached as immutable; without, it is revalidated.

The page knows nothing of any dataset: the form, the batch columns and the on-device
preprocessing all come from the artifact's schema and preprocess.json.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.core import Core
from api.errors import error_response
from api.settings import Settings

if TYPE_CHECKING:
    from api.app import LockserveApp

log = logging.getLogger("lockserve.page")

PAGE = Path(__file__).resolve().parent.parent / "page"
STATIC = PAGE / "static"
# what `make web` copies into static/vendor (the Makefile's WEB_FILES; a test holds them equal)
VENDORED = (
    "ort.wasm.bundle.min.mjs",
    "ort-wasm-simd-threaded.wasm",
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MEDIA = {"onnx": "application/octet-stream", "preprocess": "application/json"}


def _preprocess_member(data: bytes) -> bytes:
    """preprocess.json of a verified artifact zip, byte for byte."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read("preprocess.json")


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def install(app: LockserveApp, core: Core, settings: Settings) -> None:
    """Add the page, its assets and the on-device model files."""
    store = core.store
    primary = core.strategy.primary
    missing = [name for name in VENDORED if not (STATIC / "vendor" / name).is_file()]
    if missing:
        log.warning(
            "api/page/static/vendor lacks %s (`make web` installs them): the page answers from the "
            "server only and /docs has no Swagger UI",
            ", ".join(missing),
        )
    index = (
        (PAGE / "index.html")
        .read_text()
        .replace("{{max_batch}}", str(settings.max_batch))
        .replace("{{max_body_bytes}}", str(settings.max_body_bytes))
    )
    router = APIRouter(include_in_schema=False)

    @cache
    def body(variant: str, what: str) -> tuple[bytes, str] | None:
        served = store.get(variant)
        if what == "onnx":
            data = served.artifact.onnx
        else:
            data = _preprocess_member(served.resolved.data)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def model_file(what: str, request: Request, variant: str | None, md5: str | None) -> Response:
        name = variant or primary
        if name not in store.variants():
            return error_response(
                404, f"no variant {name!r}: this server serves {', '.join(store.variants())}"
            )
        served = store.get(name)
        if md5 is not None and md5 != served.md5:
            return error_response(
                404, f"variant {name!r} serves md5 {served.md5}, not {md5}: reload the page"
            )
        found = body(name, what)
        if found is None:
            return error_response(
                404,
                f"variant {name!r} (md5 {served.md5}) has no ONNX graph (its estimator could not "
                "be converted): it can be run on the server only",
            )
        data, sha256 = found
        etag = f'"{served.md5}"'
        headers = {
            "ETag": etag,
            "X-Content-SHA256": sha256,
            "Cache-Control": IMMUTABLE if md5 is not None else REVALIDATE,
        }
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=MEDIA[what], headers=headers)

    @router.get("/model/onnx")
    def onnx(request: Request, variant: str | None = None, md5: str | None = None) -> Response:
        return model_file("onnx", request, variant, md5)

    @router.get("/model/preprocess")
    def preprocess(
        request: Request, variant: str | None = None, md5: str | None = None
    ) -> Response:
        return model_file("preprocess", request, variant, md5)

    @router.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(index, headers={"Cache-Control": REVALIDATE})

    app.include_router(router)
    app.mount("/page", Revalidated(directory=STATIC), name="page")


class Revalidated(StaticFiles):
    """Static files a browser revalidates (ETag, 304) before each use, so an upgraded server's
    page never runs with last version's scripts."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = REVALIDATE
        return response
