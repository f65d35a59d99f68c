"""API keys: create, bootstrap, revoke; tenants; audit log. Verifying a key: ``verifier``."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.models import ALL_SCOPES, ApiKey, AuditLog, Scope, Tenant
from shared.auth.principal import Principal, hash_key
from shared.auth.verifier import KeyVerifier
from shared.errors import Unprocessable

KEY_PREFIX = "wp_"


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
    expires_at: datetime | None = None,
    rotated_from: uuid.UUID | None = None,
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
        expires_at=expires_at,
        rotated_from=rotated_from,
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
    "hash_key",
    "create_key",
    "ensure_bootstrap_key",
    "ensure_tenant",
]
