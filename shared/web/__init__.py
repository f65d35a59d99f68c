"""The web pages' shared machinery: sessions, sign-in, CSRF, CSP, templates, static files.

A service with pages calls ``install_pages`` once on its app (see services/*/pages/__init__.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from shared.config import CommonSettings
from shared.errors import WaypointError
from shared.web.auth import SignInRequired, sign_in_url
from shared.web.routes import router as sign_in_router
from shared.web.security import PAGES_PREFIX, PageHeadersMiddleware
from shared.web.templating import make_templates, render

SHARED_STATIC = Path(__file__).parent / "static"


def _is_page(request: Request) -> bool:
    path = request.url.path
    return path == PAGES_PREFIX or path.startswith(PAGES_PREFIX + "/")


def install_pages(
    app: FastAPI,
    *,
    service: str,
    settings: CommonSettings,
    router: APIRouter,
    templates: Path,
    static: Path | None,
    home: str,
) -> None:
    """Add ``router``'s pages, sign-in/out, static files, security headers and HTML errors."""
    app.state.templates = make_templates(templates)
    app.state.pages_service = service
    app.state.pages_home = home
    app.include_router(sign_in_router)
    app.include_router(router)
    # the more specific mount first: /app/static/<service>/… before /app/static/…
    if static is not None:
        app.mount(f"/app/static/{service}", StaticFiles(directory=static), name=f"{service}-static")
    app.mount("/app/static", StaticFiles(directory=SHARED_STATIC), name="shared-static")
    app.add_middleware(PageHeadersMiddleware, frame_ancestors=settings.web_frame_ancestors)

    json_waypoint_error: Any = app.exception_handlers[WaypointError]
    json_validation_error: Any = app.exception_handlers[RequestValidationError]

    async def waypoint_error(request: Request, exc: Exception) -> Response:
        if not _is_page(request):
            return await json_waypoint_error(request, exc)  # type: ignore[no-any-return]
        if isinstance(exc, SignInRequired):
            target = sign_in_url(exc.next_url or None)
            if request.headers.get("hx-request"):  # htmx: navigate the whole page
                return Response(status_code=401, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        assert isinstance(exc, WaypointError)
        return render(
            request,
            "error.html",
            {"status": exc.status_code, "message": exc.message},
            status_code=exc.status_code,
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not _is_page(request):
            return await json_validation_error(request, exc)  # type: ignore[no-any-return]
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return render(
            request,
            "error.html",
            {"status": 422, "message": f"That request is not valid: {problems}"},
            status_code=422,
        )

    app.add_exception_handler(WaypointError, waypoint_error)
    app.add_exception_handler(RequestValidationError, validation_error)


__all__ = ["install_pages", "render"]
