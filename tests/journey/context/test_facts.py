"""An agent's fact is bounded like a ``fact.collected`` event: refused input leaves nothing
behind. (A fact recorded while the broker is down: tests/journey/test_outbox.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from services.journey.app import create_app
from services.journey.config import JourneySettings
from shared.db import Database
from shared.events.payloads import FACT_NAME_MAX_CHARS, FACT_VALUE_MAX_CHARS
from tests import support
from tests.journey.conftest import cloud_event, context_when, send
from tests.support import served

Tenant = support.TestTenant


async def _customer(journey, producer, settings: JourneySettings, tenant: Tenant) -> str:
    email = f"facts-{uuid.uuid4().hex[:8]}@x.test"
    event = cloud_event(tenant=tenant.id, identifiers=[{"type": "email", "value": email}])
    await send(producer, settings, event)
    found = await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value=email
    )
    return str(found["customer_id"])


async def _stored(db: Database, client: httpx.AsyncClient, tenant: Tenant, cid: str) -> Any:
    """(fact events in the event table, facts in the context document) of the customer."""
    async with db.session() as session:
        events = await session.scalar(
            text(
                "SELECT count(*) FROM journey.event WHERE tenant_id = :t "
                "AND type = 'fact.collected'"
            ),
            {"t": tenant.id},
        )
    context = (await client.get(f"/v1/customers/{cid}/context", headers=tenant.headers)).json()
    return events, [(f["name"], f["value"]) for f in context["facts"]]


async def test_facts_outside_the_bounds_are_422_and_nothing_is_stored(
    journey, journey_worker, producer, journey_settings, db: Database, make_tenant
):
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    cid = await _customer(journey, producer, journey_settings, tenant)
    url = f"/v1/customers/{cid}/facts"
    async with served(create_app(journey_settings)) as client:
        refused = {
            "name too long": {"name": "n" * (FACT_NAME_MAX_CHARS + 1), "value": "v"},
            "value too long": {"name": "note", "value": "v" * (FACT_VALUE_MAX_CHARS + 1)},
            "NUL in the value": {"name": "note", "value": "a\x00b"},
            "time out of range": {
                "name": "note",
                "value": "v",
                "expires_at": "9999-12-31T23:59:59-14:00",
            },
        }
        for case, body in refused.items():
            r = await client.post(url, json=body, headers=tenant.headers)
            assert r.status_code == 422, (case, r.text)
            assert r.json()["error"] == "validation_error", case
            assert r.json()["detail"][0]["loc"].startswith("body."), (case, r.text)
        huge = {"name": "note", "value": "v" * (50 * 1024 * 1024)}  # the 50 MiB of the report
        r = await client.post(url, json=huge, headers=tenant.headers)
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]
        assert await _stored(db, client, tenant, cid) == (0, [])

        at_the_bound = {"name": "n" * FACT_NAME_MAX_CHARS, "value": "v" * FACT_VALUE_MAX_CHARS}
        r = await client.post(url, json=at_the_bound, headers=tenant.headers)
        assert r.status_code == 201, r.text
        assert await _stored(db, client, tenant, cid) == (1, [(at_the_bound["name"], "v" * 2000)])
