"""API keys: create, verify (with a short in-process cache), bootstrap; tenants; audit log."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.models import ALL_SCOPES, ApiKey, AuditLog, Scope, Tenant
from shared.errors import Forbidden, Unauthorized, Unprocessable

KEY_PREFIX = "wp_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant the key is bound to and what it may do."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    phone_region: str | None = None  # the tenant's own; None: the shared WAYPOINT_PHONE_REGION

    def allows(self, scope: Scope | str) -> bool:
        return Scope.admin.value in self.scopes or str(scope) in self.scopes

    def region(self, default: str) -> str:
        """Country of this tenant's phone numbers written without a +country code."""
        return self.phone_region or default

    def require(self, *scopes: Scope | str) -> None:
        """Pass if the key holds any of ``scopes`` (``admin`` holds them all)."""
        if not any(self.allows(s) for s in scopes):
            wanted = " or ".join(str(s) for s in scopes)
            raise Forbidden(f"this API key lacks the {wanted} scope")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise Unprocessable(f"unknown scopes {unknown}; known: {ALL_SCOPES}")
    if not scopes:
        raise Unprocessable("a key needs at least one scope")
    return sorted(set(scopes))


async def ensure_tenant(
    session: AsyncSession,
    tenant_id: str,
    name: str | None = None,
    *,
    phone_region: str | None = None,
) -> bool:
    """Create the tenant unless it exists (an existing one is left as it is); True if created."""
    result = await session.execute(
        text(
            "INSERT INTO auth.tenant (id, name, phone_region) VALUES (:id, :name, :region) "
            "ON CONFLICT (id) DO NOTHING"
        ),
        {"id": tenant_id, "name": name or tenant_id, "region": phone_region},
    )
    return bool(getattr(result, "rowcount", 0))


async def create_key(
    session: AsyncSession,
    *,
    tenant_id: str,
    name: str,
    scopes: list[str],
    key: str | None = None,
) -> tuple[str, ApiKey]:
    """Store a new key (hashed) and return the plaintext once, with its row."""
    plaintext = key or generate_key()
    await ensure_tenant(session, tenant_id)
    row = ApiKey(
        tenant_id=tenant_id,
        name=name,
        key_hash=hash_key(plaintext),
        display_prefix=plaintext[:10],
        scopes=validate_scopes(scopes),
    )
    session.add(row)
    await session.flush()
    await audit(
        session,
        tenant_id=tenant_id,
        actor="system",
        action="api_key.created",
        target=str(row.id),
        detail={"name": name, "scopes": row.scopes},
    )
    return plaintext, row


async def ensure_bootstrap_key(session: AsyncSession, *, tenant_id: str, key: str) -> bool:
    """Make ``key`` an admin key of ``tenant_id`` with every scope; True if it was created now."""
    found = await session.execute(
        text("SELECT 1 FROM auth.api_key WHERE key_hash = :h"), {"h": hash_key(key)}
    )
    if found.first():
        return False
    await create_key(
        session, tenant_id=tenant_id, name="bootstrap admin", scopes=ALL_SCOPES, key=key
    )
    return True


async def audit(
    session: AsyncSession,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditLog(
            tenant_id=tenant_id, actor=actor, action=action, target=target, detail=detail or {}
        )
    )
    await session.flush()


class KeyVerifier:
    """Looks keys up by hash; remembers answers for ``ttl`` seconds (revocation takes ≤ ttl)."""

    def __init__(self, sessionmaker: Any, ttl: float = 30.0, max_entries: int = 10_000):
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def verify(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized()
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            principal = await self._lookup(digest)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT k.id, k.tenant_id, k.scopes, k.last_used_at, t.phone_region "
                        "FROM auth.api_key k JOIN auth.tenant t ON t.id = k.tenant_id "
                        "WHERE k.key_hash = :h AND k.revoked_at IS NULL"
                    ),
                    {"h": digest},
                )
            ).first()
            if row is not None and _stale(row.last_used_at):
                # Only when a minute old: a conditional UPDATE, never a lock on a hot row.
                await session.execute(
                    text(
                        "UPDATE auth.api_key SET last_used_at = now() WHERE id = :id AND "
                        "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
                    ),
                    {"id": row.id},
                )
                await session.commit()
        if row is None:
            return None
        return Principal(
            tenant_id=row.tenant_id,
            key_id=str(row.id),
            scopes=frozenset(row.scopes),
            phone_region=row.phone_region,
        )

    def forget(self) -> None:
        self._cache.clear()


def _stale(last_used_at: datetime | None) -> bool:
    return last_used_at is None or datetime.now(UTC) - last_used_at > timedelta(minutes=1)


async def revoke_key(
    session: AsyncSession, *, key_id: uuid.UUID, tenant_id: str | None = None
) -> bool:
    """Revoke an active key (of ``tenant_id`` when given); False if there is none."""
    result = await session.execute(
        text(
            "UPDATE auth.api_key SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL "
            "AND (CAST(:t AS text) IS NULL OR tenant_id = :t)"
        ),
        {"id": key_id, "t": tenant_id},
    )
    return bool(getattr(result, "rowcount", 0))


async def list_keys(session: AsyncSession, *, tenant_id: str | None = None) -> list[ApiKey]:
    """Every key (of ``tenant_id`` when given), oldest first; hashes are not secrets' plaintext."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)  # type: ignore[arg-type]
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)  # type: ignore[arg-type]
    return list((await session.execute(query)).scalars())


async def known_tenants(session: AsyncSession) -> set[str]:
    rows = await session.execute(text("SELECT id FROM auth.tenant"))
    return {r[0] for r in rows}


__all__ = [
    "KeyVerifier",
    "Principal",
    "Scope",
    "Tenant",
    "create_key",
    "ensure_bootstrap_key",
    "ensure_tenant",
]
