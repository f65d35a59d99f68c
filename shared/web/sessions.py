"""Server-side sessions of the web pages, in ``auth.web_session``.

Signing in exchanges an API key (checked by the same ``KeyVerifier`` as the API) for a random
session token in an HttpOnly cookie; the table keeps only the token's SHA-256. A session is
bound to its key: the key's current scopes are read on every request and revoking the key ends
the session. Sessions end ``web_session_hours`` after sign-in, or after ``web_session_idle_minutes``
unused, whichever comes first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.service import Principal

# Refresh last_seen_at at most this often: a page view is a read, not a write, most of the time.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    csrf_token: str
    expires_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


async def open_session(
    session: AsyncSession, principal: Principal, *, lifetime: timedelta, now: datetime | None = None
) -> tuple[str, WebSession]:
    """A new session for ``principal``; returns the cookie token (shown once) and the session."""
    now = now or datetime.now(UTC)
    token = new_token()
    csrf = new_token()
    expires = now + lifetime
    # Opportunistic clean-up of long-dead rows (indexed; a handful at a time in practice).
    await session.execute(
        text("DELETE FROM auth.web_session WHERE expires_at < :cutoff"),
        {"cutoff": now - timedelta(days=1)},
    )
    await session.execute(
        text(
            "INSERT INTO auth.web_session "
            "(token_hash, tenant_id, key_id, csrf_token, created_at, last_seen_at, expires_at) "
            "VALUES (:h, :t, CAST(:k AS uuid), :csrf, :now, :now, :exp)"
        ),
        {
            "h": token_hash(token),
            "t": principal.tenant_id,
            "k": principal.key_id,
            "csrf": csrf,
            "now": now,
            "exp": expires,
        },
    )
    return token, WebSession(principal, csrf, expires)


async def load_session(
    session: AsyncSession, token: str | None, *, idle: timedelta, now: datetime | None = None
) -> WebSession | None:
    """The live session behind a cookie token, with its key's current scopes; None if the token
    is unknown, expired, idle too long, or its key was revoked or has expired."""
    if not token or len(token) > 128:
        return None
    now = now or datetime.now(UTC)
    row = (
        await session.execute(
            text(
                "SELECT s.tenant_id, s.key_id, s.csrf_token, s.last_seen_at, s.expires_at, "
                "k.scopes FROM auth.web_session s "
                "JOIN auth.api_key k ON k.id = s.key_id AND k.tenant_id = s.tenant_id "
                "WHERE s.token_hash = :h AND k.revoked_at IS NULL "
                "AND (k.expires_at IS NULL OR k.expires_at > :now)"
            ),
            {"h": token_hash(token), "now": now},
        )
    ).first()
    if row is None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        await session.execute(
            text("UPDATE auth.web_session SET last_seen_at = :now WHERE token_hash = :h"),
            {"now": now, "h": token_hash(token)},
        )
    principal = Principal(
        tenant_id=row.tenant_id, key_id=str(row.key_id), scopes=frozenset(row.scopes)
    )
    return WebSession(principal, row.csrf_token, row.expires_at)


async def close_session(session: AsyncSession, token: str | None) -> None:
    if token:
        await session.execute(
            text("DELETE FROM auth.web_session WHERE token_hash = :h"), {"h": token_hash(token)}
        )
