"""An API key's life after creation: expiry, and rotation with a grace period."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.service import audit, create_key
from shared.errors import NotFound, Unprocessable


@dataclass(frozen=True)
class KeyInfo:
    id: uuid.UUID
    tenant_id: str
    name: str
    display_prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    rotated_from: uuid.UUID | None


_COLUMNS = (
    "id, tenant_id, name, display_prefix, scopes, created_at, expires_at, last_used_at, "
    "revoked_at, rotated_from"
)


async def get_key(session: AsyncSession, key_id: uuid.UUID, *, lock: bool = False) -> KeyInfo:
    row = (
        await session.execute(
            text(
                f"SELECT {_COLUMNS} FROM auth.api_key WHERE id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": key_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"no API key {key_id}")
    return KeyInfo(**row._mapping)


async def set_expiry(
    session: AsyncSession, key_id: uuid.UUID, expires_at: datetime | None, *, actor: str
) -> KeyInfo:
    """Expire the key at ``expires_at`` (None: never); APIs refuse it from then on, to the
    second, whatever their key caches hold."""
    key = await get_key(session, key_id, lock=True)
    if key.revoked_at is not None:
        raise Unprocessable(f"API key {key_id} is revoked")
    await session.execute(
        text("UPDATE auth.api_key SET expires_at = :at WHERE id = :id"),
        {"at": expires_at, "id": key_id},
    )
    await audit(
        session,
        tenant_id=key.tenant_id,
        actor=actor,
        action="api_key.expiry_set",
        target=str(key_id),
        detail={"expires_at": expires_at.isoformat() if expires_at else None},
    )
    return await get_key(session, key_id)


async def rotate_key(
    session: AsyncSession,
    key_id: uuid.UUID,
    *,
    grace: timedelta,
    actor: str,
    expires_in: timedelta | None = None,
    now: datetime | None = None,
) -> tuple[str, KeyInfo, KeyInfo]:
    """A successor with the same tenant, name and scopes (plaintext returned once); the old key
    keeps working for ``grace`` (sooner if it already expired sooner), so both are valid while
    clients change over. Returns (plaintext, successor, old key)."""
    now = now or datetime.now(UTC)
    old = await get_key(session, key_id, lock=True)
    if old.revoked_at is not None:
        raise Unprocessable(f"API key {key_id} is revoked: create a new key instead")
    if old.expires_at is not None and old.expires_at <= now:
        raise Unprocessable(f"API key {key_id} has expired: create a new key instead")
    if grace < timedelta(0):
        raise Unprocessable("the grace period cannot be negative")
    ends = now + grace
    if old.expires_at is not None:
        ends = min(ends, old.expires_at)
    await session.execute(
        text("UPDATE auth.api_key SET expires_at = :at WHERE id = :id"),
        {"at": ends, "id": key_id},
    )
    plaintext, row = await create_key(
        session,
        tenant_id=old.tenant_id,
        name=old.name,
        scopes=list(old.scopes),
        expires_at=now + expires_in if expires_in is not None else None,
        rotated_from=old.id,
    )
    await audit(
        session,
        tenant_id=old.tenant_id,
        actor=actor,
        action="api_key.rotated",
        target=str(key_id),
        detail={"successor": str(row.id), "old_key_expires_at": ends.isoformat()},
    )
    return plaintext, await get_key(session, row.id), await get_key(session, key_id)


def parse_duration(value: str) -> timedelta:
    """``90d``, ``24h``, ``30m``, ``45s`` or ``0`` → a timedelta (what the CLI accepts)."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    text_ = value.strip().lower()
    try:
        if text_ == "0":
            return timedelta(0)
        amount, unit = float(text_[:-1]), units[text_[-1]]
    except (KeyError, ValueError, IndexError):
        raise Unprocessable(f"not a duration: {value!r} (use 90d, 24h, 30m or 45s)") from None
    if amount < 0:
        raise Unprocessable(f"not a duration: {value!r} (negative)")
    return timedelta(**{unit: amount})
