"""FastAPI dependencies: who is calling, checked for scope. Use the aliases in endpoints."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from shared.auth.models import Scope
from shared.auth.service import KeyVerifier, Principal


def extract_key(request: Request) -> str | None:
    """``Authorization: Bearer <key>``, ``X-API-Key``, or HTTP Basic with the key as user name
    (how Segment and RudderStack SDKs send their write key)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return user or password or None
    return request.headers.get("x-api-key")


async def get_principal(request: Request) -> Principal:
    verifier: KeyVerifier = request.app.state.key_verifier
    return await verifier.verify(extract_key(request))


def requires(*scopes: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency: the caller's key must hold one of ``scopes`` (``admin`` holds all)."""

    async def dependency(request: Request) -> Principal:
        principal = await get_principal(request)
        principal.require(*scopes)
        return principal

    return dependency


PrincipalDep = Annotated[Principal, Depends(get_principal)]
EventsWriter = Annotated[Principal, Depends(requires(Scope.events_write))]
EventsReader = Annotated[Principal, Depends(requires(Scope.events_read))]
ContextReader = Annotated[Principal, Depends(requires(Scope.context_read))]
AlertsReader = Annotated[Principal, Depends(requires(Scope.alerts_read))]
AlertsWriter = Annotated[Principal, Depends(requires(Scope.alerts_write))]
AnalyticsReader = Annotated[Principal, Depends(requires(Scope.analytics_read))]
Admin = Annotated[Principal, Depends(requires(Scope.admin))]
