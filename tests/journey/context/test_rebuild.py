"""Contexts are derived: rebuilding from the stored events gives the same document back."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from services.journey.context.rebuild import rebuild_contexts
from tests.journey.conftest import cloud_event, context_when, send


async def test_rebuild_restores_a_context_from_its_events(
    journey, journey_worker, producer, journey_settings, db, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    email = f"rb-{uuid.uuid4().hex[:6]}@x.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(
        producer,
        journey_settings,
        cloud_event(tenant=tenant.id, type="fact.collected", identifiers=ident, name="a", value=1),
        cloud_event(tenant=tenant.id, type="case.opened", identifiers=ident, case_id="R1"),
    )
    params = {"identifier_type": "email", "value": email}
    before = await context_when(journey, tenant.headers, lambda c: bool(c["open_cases"]), **params)
    async with db.session() as s:
        await s.execute(
            text(
                """UPDATE journey.context SET doc = '{"event_count": 0}'::json
                   WHERE tenant_id = :t"""
            ),
            {"t": tenant.id},
        )
    assert await rebuild_contexts(db, journey_settings, tenant=tenant.id) == 1
    after = await context_when(
        journey, tenant.headers, lambda c: c["version"] > before["version"], **params
    )
    assert after["facts"] == before["facts"]
    assert after["open_cases"] == before["open_cases"]
    assert after["identities"] == before["identities"]
