"""Who is looking at a page: the session behind the cookie, checked for the API's scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from shared.auth.dependencies import SAFE_METHODS, WRITE_SCOPES
from shared.auth.models import Scope
from shared.config import CommonSettings
from shared.errors import WaypointError
from shared.ratelimit.limiter import RateLimiter
from shared.web.security import check_csrf, session_cookie_name
from shared.web.sessions import WebSession, load_session


class SignInRequired(WaypointError):
    """No live session: pages answer with a redirect to the sign-in page."""

    status_code = 401
    error = "sign_in_required"

    def __init__(self, next_url: str):
        super().__init__("sign in to see this page")
        self.next_url = next_url


def sign_in_url(next_url: str | None = None) -> str:
    return "/app/sign-in" + (f"?next={quote(next_url, safe='/')}" if next_url else "")


def safe_next(value: str | None, default: str) -> str:
    """Only a path of our pages (no scheme, no host, no ``//``): never an open redirect."""
    if (
        not value
        or not value.startswith("/app/")
        or value.startswith("//")
        or "\\" in value
        or value.startswith("/app/sign-")
    ):
        return default
    return value


def _here(request: Request) -> str:
    if request.method != "GET" or request.headers.get("hx-request"):
        # after signing in, go back to the page (not to a fragment or a form post)
        referer_path = request.headers.get("hx-current-url", "")
        return referer_path.split(request.url.netloc, 1)[-1] if referer_path else ""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def current_session(request: Request) -> WebSession:
    settings: CommonSettings = request.app.state.settings
    token = request.cookies.get(session_cookie_name(request, settings))
    async with request.app.state.db.session() as session:
        web = await load_session(
            session, token, idle=timedelta(minutes=settings.web_session_idle_minutes)
        )
    if web is None:
        raise SignInRequired(_here(request))
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:  # pages count against their key's limits, as the API does
        limiter.check_request(
            web.principal.key_id,
            web.principal.tenant_id,
            write=request.method not in SAFE_METHODS,
        )
    request.state.web = web
    return web


def page_requires(*scopes: Scope | str) -> Callable[[Request], Awaitable[WebSession]]:
    """Dependency: a signed-in session whose key holds one of ``scopes`` (``admin`` holds all)."""

    async def dependency(request: Request) -> WebSession:
        web = await current_session(request)
        web.principal.require(*scopes)
        return web

    return dependency


def page_writes(*scopes: Scope | str) -> Callable[[Request], Awaitable[WebSession]]:
    """Like ``page_requires``, for unsafe requests: also checks the CSRF token; a read scope
    with a write counterpart needs that one (``context:read`` → ``context:write``), as the API."""

    needed = tuple(WRITE_SCOPES.get(Scope(s), s) if s in WRITE_SCOPES else s for s in scopes)

    async def dependency(request: Request) -> WebSession:
        web = await current_session(request)
        await check_csrf(request, web)
        web.principal.require(*needed)
        return web

    return dependency


SignedIn = Annotated[WebSession, Depends(current_session)]
