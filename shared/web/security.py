"""Headers every page carries (strict CSP, no sniffing, no referrer, no caching of personal
data), the session cookie's flags, and the CSRF check of unsafe requests."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import CommonSettings, Environment
from shared.errors import Forbidden
from shared.web.sessions import WebSession, same_token

PAGES_PREFIX = "/app"
STATIC_PREFIX = "/app/static/"
SESSION_COOKIE = "waypoint_session"
SIGNIN_COOKIE = "waypoint_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def content_security_policy(frame_ancestors: str) -> str:
    """No inline script or style anywhere: every script and stylesheet is a file of ours."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {frame_ancestors}",
        )
    )


class PageHeadersMiddleware:
    """Adds the security headers to every response under ``/app`` (pages, fragments, streams,
    static files). Pure ASGI, so server-sent event streams pass through untouched."""

    def __init__(self, app: ASGIApp, *, frame_ancestors: str = "'none'"):
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(frame_ancestors).encode()),
            (b"x-content-type-options", b"nosniff"),
            # CTI links carry phone numbers and e-mails in the query: never send them onwards.
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if frame_ancestors.strip() == "'none'":
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == PAGES_PREFIX or path.startswith(PAGES_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self.headers)
                if not static:  # pages show personal data: keep them out of every cache
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cookie_secure(request: Request, settings: CommonSettings) -> bool:
    """Secure behind HTTPS (uvicorn honours X-Forwarded-Proto from trusted proxies), always in
    production, and always with SameSite=None (browsers refuse it otherwise)."""
    return (
        request.url.scheme == "https"
        or settings.env is Environment.prod
        or settings.web_cookie_samesite == "none"
    )


def session_cookie_name(request: Request, settings: CommonSettings) -> str:
    # __Host-: the browser accepts it only Secure, from this host, for path / (no subdomain
    # can plant or overwrite it).
    return f"__Host-{SESSION_COOKIE}" if cookie_secure(request, settings) else SESSION_COOKIE


def set_session_cookie(
    response: Response, request: Request, settings: CommonSettings, token: str, max_age: int
) -> None:
    response.set_cookie(
        session_cookie_name(request, settings),
        token,
        max_age=max_age,
        path="/",
        secure=cookie_secure(request, settings),
        httponly=True,
        samesite=settings.web_cookie_samesite,
        partitioned=settings.web_cookie_samesite == "none",
    )


def clear_session_cookie(response: Response, request: Request, settings: CommonSettings) -> None:
    response.delete_cookie(
        session_cookie_name(request, settings),
        path="/",
        secure=cookie_secure(request, settings),
        httponly=True,
        samesite=settings.web_cookie_samesite,
    )


async def check_csrf(request: Request, web: WebSession | None, expected: str | None = None) -> None:
    """Unsafe requests must carry the session's CSRF token (form field or ``X-CSRF-Token``, as
    htmx sends it) and must not come from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused")
    sent: Any = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get(CSRF_FIELD)
    wanted = expected if expected is not None else (web.csrf_token if web else None)
    if not same_token(sent if isinstance(sent, str) else None, wanted):
        raise Forbidden("the form is out of date (CSRF token missing or wrong): reload the page")
