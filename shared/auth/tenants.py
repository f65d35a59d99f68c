"""Tenants and their own settings (today: the phone region), for the CLI and the workers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.service import audit, ensure_tenant
from shared.errors import Conflict, NotFound, Unprocessable
from shared.events.identifiers import normalize_region

# What an event's ``tenant`` attribute accepts (shared/events/envelope.py): any other id could
# hold keys but never receive an event.
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CLEARED = {"", "default", "none"}


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: str
    name: str
    phone_region: str | None  # None: the shared WAYPOINT_PHONE_REGION
    created_at: datetime | None = None


def phone_region_setting(value: str | None) -> str | None:
    """A region as given by an operator: ``RU`` → ``RU``; ``default`` / empty → None (shared)."""
    if value is None or value.strip().lower() in _CLEARED:
        return None
    try:
        return normalize_region(value)
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None


async def create_tenant(
    session: AsyncSession,
    tenant_id: str,
    *,
    name: str | None = None,
    phone_region: str | None = None,
    actor: str = "system",
) -> TenantInfo:
    """A new tenant; ``Conflict`` if the id is taken (change settings with the setters)."""
    if not _TENANT_ID.match(tenant_id):
        raise Unprocessable(
            f"tenant id {tenant_id!r}: 1-64 of a-z, 0-9, '_' and '-', starting with a letter or "
            "digit (what an event's tenant attribute accepts)"
        )
    region = phone_region_setting(phone_region)
    if not await ensure_tenant(session, tenant_id, name, phone_region=region):
        raise Conflict(f"tenant {tenant_id!r} already exists")
    await audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="tenant.created",
        target=tenant_id,
        detail={"name": name or tenant_id, "phone_region": region},
    )
    return TenantInfo(tenant_id, name or tenant_id, region)


async def set_phone_region(
    session: AsyncSession, tenant_id: str, phone_region: str | None, *, actor: str = "system"
) -> TenantInfo:
    """Set (or with None / ``default``, clear) a tenant's own phone region; audited."""
    region = phone_region_setting(phone_region)
    row = (
        await session.execute(
            text(
                "UPDATE auth.tenant SET phone_region = :region WHERE id = :id "
                "RETURNING id, name, phone_region, created_at"
            ),
            {"id": tenant_id, "region": region},
        )
    ).first()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    await audit(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="tenant.phone_region_set",
        target=tenant_id,
        detail={"phone_region": region},
    )
    return TenantInfo(row.id, row.name, row.phone_region, row.created_at)


async def list_tenants(session: AsyncSession) -> list[TenantInfo]:
    rows = await session.execute(
        text("SELECT id, name, phone_region, created_at FROM auth.tenant ORDER BY id")
    )
    return [TenantInfo(r.id, r.name, r.phone_region, r.created_at) for r in rows]


async def tenant_regions(session: AsyncSession) -> dict[str, str | None]:
    """Every tenant with its own phone region (None: it uses the shared default)."""
    rows = await session.execute(text("SELECT id, phone_region FROM auth.tenant"))
    return {r[0]: r[1] for r in rows}
