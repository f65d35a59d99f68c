"""Sensitive values in journey: stored sealed (as ingest publishes them, and as agents record
them), masked in the context, timeline and the facts 201, opened only for an audited admin
reveal (issue 12, item 3)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from services.journey.config import JourneySettings
from shared.db import Database, raw_connection
from shared.events import validate_event
from shared.privacy.crypto import Keyring
from shared.privacy.masking import MASK
from shared.privacy.sealing import seal
from tests.journey.conftest import cloud_event, context_when
from tests.support import stands_alone

CARD = "4111 1111 1111 1111"


async def _send_sealed(producer, db: Database, settings: JourneySettings, *events: Any) -> None:
    """What the ingest worker does: seal, then publish to the normalized topic."""
    keyring = Keyring.from_setting(settings.sealing_keys)
    for raw in events:
        env = validate_event(raw, now=datetime.now(UTC))
        async with db.session() as session:
            await keyring.ensure(await raw_connection(session), {env.tenant})
        seal(env, keyring)
        await producer.send_and_wait(
            settings.topic_normalized, env.to_json(), key=env.primary_key().encode()
        )


async def _dump(db: Database, tenant: str) -> str:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT envelope::text FROM journey.event WHERE tenant_id = :t UNION ALL "
                "SELECT doc::text FROM journey.context WHERE tenant_id = :t"
            ),
            {"t": tenant},
        )
        return " ".join(r[0] for r in rows)


async def test_sealed_values_are_masked_everywhere_and_opened_for_an_audited_admin(
    journey, journey_worker, producer, journey_settings, make_tenant, db: Database
):
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    admin = {"Authorization": f"Bearer {await make_tenant.key(tenant, scopes=['admin'])}"}
    email = f"p-{uuid.uuid4().hex[:6]}@shop.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await _send_sealed(
        producer,
        db,
        journey_settings,
        cloud_event(
            tenant=tenant.id, type="fact.collected", identifiers=ident, name="card",
            value=CARD, sensitive=True,
        ),
        cloud_event(
            tenant=tenant.id, type="message.received", identifiers=ident,
            text=f"my card is {CARD}", sensitive=True,
        ),
    )  # fmt: skip
    ctx = await context_when(
        journey,
        tenant.headers,
        lambda c: bool(c["facts"]) and len(c["recent"]) == 2,
        identifier_type="email",
        value=email,
    )
    cid = ctx["customer_id"]
    assert ctx["facts"][0]["value"] == MASK
    assert {i.get("excerpt", i.get("value")) for i in ctx["recent"]} == {MASK}
    assert "wpenc1:" not in str(ctx)

    # An agent records a sensitive fact: the 201 is masked, the stores hold no plaintext.
    pin = await journey.post(
        f"/v1/customers/{cid}/facts",
        json={"name": "pin", "value": "8642", "sensitive": True},
        headers=tenant.headers,
    )
    assert pin.status_code == 201, pin.text
    assert pin.json()["fact"]["value"] == MASK
    assert "sealed" not in pin.json()["fact"]
    dump = await _dump(db, tenant.id)
    assert CARD not in dump
    assert not stands_alone("8642", dump)  # (the dump's UUIDs may hold any four digits)
    assert "wpenc1:" in dump

    timeline = await journey.get(f"/v1/customers/{cid}/timeline", headers=tenant.headers)
    assert {i.get("excerpt", i.get("value")) for i in timeline.json()["items"]} == {MASK}

    shown = await journey.get(
        f"/v1/customers/{cid}/context", params={"reveal_sensitive": "true"}, headers=admin
    )
    assert shown.status_code == 200, shown.text
    facts = {f["name"]: f["value"] for f in shown.json()["facts"]}
    assert facts == {"card": CARD, "pin": "8642"}
    opened = await journey.get(
        f"/v1/customers/{cid}/timeline", params={"reveal_sensitive": "true"}, headers=admin
    )
    values = {i.get("excerpt", i.get("value")) for i in opened.json()["items"]}
    assert values == {CARD, f"my card is {CARD}", "8642"}
    assert "wpenc1:" not in opened.text
    async with db.session() as session:
        actions = (
            await session.execute(
                text("SELECT action FROM auth.audit_log WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalars()
        assert list(actions).count("context.sensitive_revealed") == 2
