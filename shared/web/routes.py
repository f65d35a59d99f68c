"""Sign-in and sign-out pages, served by every service that has pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from shared.auth.dependencies import client_ip
from shared.auth.service import audit
from shared.auth.verifier import KeyVerifier
from shared.config import CommonSettings
from shared.errors import TooManyRequests, Unauthorized
from shared.web.auth import SignedIn, safe_next
from shared.web.security import (
    SIGNIN_COOKIE,
    check_csrf,
    clear_session_cookie,
    cookie_secure,
    session_cookie_name,
    set_session_cookie,
)
from shared.web.sessions import close_session, new_token, open_session
from shared.web.templating import render

router = APIRouter(prefix="/app", include_in_schema=False)
SIGNIN_SECONDS = 1800


def _home(request: Request) -> str:
    home: str = request.app.state.pages_home
    return home


def _sign_in_form(
    request: Request, *, next_url: str, error: str | None = None, status_code: int = 200
) -> Response:
    # Sign-in CSRF (a login into someone else's tenant): a double-submit token, cookie + field.
    settings: CommonSettings = request.app.state.settings
    token = new_token()
    response = render(
        request,
        "sign_in.html",
        {"next": next_url, "signin_token": token, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=SIGNIN_SECONDS,
        path="/app/sign-in",
        secure=cookie_secure(request, settings),
        httponly=True,
        samesite=settings.web_cookie_samesite,  # "none" for a cross-site iframe (docs/pages.md)
        partitioned=settings.web_cookie_samesite == "none",
    )
    return response


@router.get("", include_in_schema=False)
async def pages_home(request: Request) -> Response:
    return RedirectResponse(_home(request), status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    """The sign-in form: an API key in, a session cookie out (the key never goes in a URL)."""
    return _sign_in_form(request, next_url=safe_next(next, _home(request)))


@router.post("/sign-in")
async def sign_in(
    request: Request,
    key: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",  # noqa: A002
) -> Response:
    settings: CommonSettings = request.app.state.settings
    target = safe_next(next, _home(request))
    await check_csrf(request, None, expected=request.cookies.get(SIGNIN_COOKIE))
    verifier: KeyVerifier = request.app.state.key_verifier
    try:
        principal = await verifier.verify(key.strip() or None, client=client_ip(request))
    except TooManyRequests as refused:
        page = _sign_in_form(
            request,
            next_url=target,
            error=f"Too many failed sign-ins from this address; try again in "
            f"{refused.retry_after} s.",
            status_code=429,
        )
        page.headers.update(refused.headers or {})
        return page
    except Unauthorized as refused:
        expired = "expired" in refused.message
        return _sign_in_form(
            request,
            next_url=target,
            error="That key has expired."
            if expired
            else "That key is not valid, or it was revoked.",
            status_code=401,
        )
    lifetime = timedelta(hours=settings.web_session_hours)
    async with request.app.state.db.session() as session:
        await close_session(session, request.cookies.get(session_cookie_name(request, settings)))
        token, _ = await open_session(session, principal, lifetime=lifetime)
        await audit(
            session,
            tenant_id=principal.tenant_id,
            actor=f"key:{principal.key_id}",
            action="web.signed_in",
            detail={"service": request.app.state.pages_service},
        )
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, settings, token, int(lifetime.total_seconds()))
    response.delete_cookie(SIGNIN_COOKIE, path="/app/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, web: SignedIn) -> Response:
    settings: CommonSettings = request.app.state.settings
    await check_csrf(request, web)
    async with request.app.state.db.session() as session:
        await close_session(session, request.cookies.get(session_cookie_name(request, settings)))
        await audit(
            session,
            tenant_id=web.principal.tenant_id,
            actor=f"key:{web.principal.key_id}",
            action="web.signed_out",
        )
    response = RedirectResponse("/app/sign-in", status_code=303)
    clear_session_cookie(response, request, settings)
    return response
