"""FastAPI dependencies: who is calling, checked for scope and rate limits. Use the aliases in
endpoints."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from shared.auth.models import Scope
from shared.auth.principal import Principal
from shared.auth.verifier import KeyVerifier
from shared.ratelimit.limiter import RateLimiter
from shared.ratelimit.streams import StreamSlots

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The scope a write needs on a route whose dependency names the read scope (see ContextReader).
WRITE_SCOPES = {Scope.context_read: Scope.context_write}


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


def client_ip(request: Request) -> str | None:
    """The peer's address (behind a proxy, uvicorn's --forwarded-allow-ips makes it the
    client's)."""
    return request.client.host if request.client else None


async def get_principal(request: Request) -> Principal:
    """The key's principal (401 / 429 for failed authentications), counted against its key's and
    its tenant's read or write limit (429)."""
    verifier: KeyVerifier = request.app.state.key_verifier
    principal = await verifier.verify(extract_key(request), client=client_ip(request))
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check_request(
            principal.key_id, principal.tenant_id, write=request.method not in SAFE_METHODS
        )
    return principal


class RequireScopes:
    """Dependency: the caller's key must hold one of ``scopes`` (``admin`` holds all). On an
    unsafe method, a read scope with a write counterpart (``WRITE_SCOPES``) needs that one.

    A class, so the OpenAPI document (``shared.openapi``) can read each route's scopes."""

    def __init__(self, *scopes: Scope):
        self.scopes = scopes
        self.writes = tuple(WRITE_SCOPES.get(s, s) for s in scopes)

    def for_method(self, method: str) -> tuple[Scope, ...]:
        return self.scopes if method.upper() in SAFE_METHODS else self.writes

    async def __call__(self, request: Request) -> Principal:
        principal = await get_principal(request)
        principal.require(*self.for_method(request.method))
        return principal


def requires(*scopes: Scope) -> RequireScopes:
    return RequireScopes(*scopes)


def route_scopes(call: object, method: str) -> tuple[Scope, ...] | None:
    """The scopes a dependency demands on ``method``: None when it checks no key, () when any
    valid key will do."""
    if isinstance(call, RequireScopes):
        return call.for_method(method)
    if call is open_stream:
        return _context_reader.for_method(method)
    if call is get_principal:
        return ()
    return None


_context_reader = requires(Scope.context_read)


async def open_stream(request: Request) -> AsyncIterator[Principal]:
    """Like ``ContextReader``, for a live stream: holds one of the key's stream slots
    (``WAYPOINT_SSE_STREAMS_PER_KEY`` per process; 429 past it) until the stream ends."""
    principal = await _context_reader(request)
    slots: StreamSlots = request.app.state.stream_slots
    with slots.hold(principal.key_id):
        yield principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
EventsWriter = Annotated[Principal, Depends(requires(Scope.events_write))]
EventsReader = Annotated[Principal, Depends(requires(Scope.events_read))]
# Reads need context:read; a write through this alias (journey's facts route) needs context:write.
ContextReader = Annotated[Principal, Depends(requires(Scope.context_read))]
ContextWriter = Annotated[Principal, Depends(requires(Scope.context_write))]
ContextStreamReader = Annotated[Principal, Depends(open_stream)]
AlertsReader = Annotated[Principal, Depends(requires(Scope.alerts_read))]
AlertsWriter = Annotated[Principal, Depends(requires(Scope.alerts_write))]
AnalyticsReader = Annotated[Principal, Depends(requires(Scope.analytics_read))]
Admin = Annotated[Principal, Depends(requires(Scope.admin))]
