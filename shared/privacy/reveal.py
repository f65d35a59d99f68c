"""Revealing sensitive values: admin only, audited, opened with the tenant's data key."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.models import Scope
from shared.auth.service import Principal, audit
from shared.config import CommonSettings
from shared.db import raw_connection
from shared.privacy.crypto import Keyring
from shared.privacy.masking import Opener


def keyring(state: Any) -> Keyring:
    """The process's keyring (on ``app.state``, made on first use from its settings)."""
    found: Keyring | None = getattr(state, "keyring", None)
    if found is None:
        settings: CommonSettings = state.settings
        found = Keyring.from_setting(settings.sealing_keys)
        state.keyring = found
    return found


async def opener(
    session: AsyncSession,
    state: Any,
    principal: Principal,
    *,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None = None,
) -> Opener:
    """Check ``admin``, write the audit row in ``session``'s transaction, and return what opens
    the tenant's sealed values."""
    principal.require(Scope.admin)
    await audit(
        session,
        tenant_id=principal.tenant_id,
        actor=f"key:{principal.key_id}",
        action=action,
        target=target,
        detail=detail,
    )
    ring = keyring(state)
    tenant = principal.tenant_id
    await ring.ensure(await raw_connection(session), {tenant})

    def open_(token: str) -> Any:
        return ring.unseal(tenant, token)

    return open_
