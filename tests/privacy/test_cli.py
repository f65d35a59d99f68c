"""The privacy commands: `waypoint tenants set-retention`, `waypoint keys generate-encryption`
and `waypoint erase` (the receipt and its command on the privacy topic)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import orjson
from sqlalchemy import text

from shared.config import CommonSettings
from shared.db import Database
from shared.events.erasure import CustomerErasureRequested
from shared.privacy.crypto import parse_keys
from tests.ingest.conftest import read_topic
from tests.support import TenantFactory


async def _cli(settings: CommonSettings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYPOINT_TOPIC_PRIVACY": settings.topic_privacy,
        "WAYPOINT_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _one(db: Database, sql: str, **params: Any) -> Any:
    async with db.session() as session:
        return (await session.execute(text(sql), params)).first()


async def test_retention_is_set_per_tenant_and_audited(
    db: Database, settings: CommonSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    code, out, err = await _cli(
        settings, "tenants", "set-retention", tenant.id, "--raw-events", "10", "--timelines", "0"
    )
    assert code == 0, err
    row = await _one(
        db,
        "SELECT raw_events_days, dead_letters_days, timelines_days FROM auth.tenant_retention "
        "WHERE tenant_id = :t",
        t=tenant.id,
    )
    assert tuple(row) == (10, None, 0)
    code, _, err = await _cli(settings, "tenants", "set-retention", tenant.id, "--default")
    assert code == 0, err
    row = await _one(
        db, "SELECT raw_events_days FROM auth.tenant_retention WHERE tenant_id = :t", t=tenant.id
    )
    assert row[0] is None
    audit = await _one(
        db,
        "SELECT count(*) FROM auth.audit_log WHERE tenant_id = :t "
        "AND action = 'tenant.retention_set'",
        t=tenant.id,
    )
    assert audit[0] == 2


async def test_a_generated_kek_is_a_valid_setting(settings: CommonSettings):
    code, out, err = await _cli(settings, "keys", "generate-encryption", "--id", "k9")
    assert code == 0, err
    primary, keys = parse_keys(out.strip())
    assert primary == "k9"
    assert len(keys["k9"]) == 32


async def test_waypoint_erase_stores_a_receipt_and_publishes_the_command(
    db: Database, settings: CommonSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    customer = uuid.uuid4()
    async with db.session() as session:
        await session.execute(
            text("INSERT INTO journey.customer (tenant_id, id) VALUES (:t, :c)"),
            {"t": tenant.id, "c": customer},
        )
        await session.execute(
            text(
                "INSERT INTO journey.identifier (tenant_id, id_type, value, customer_id, "
                "strength, first_seen_at, last_seen_at) "
                "VALUES (:t, 'email', 'cli@erase.test', :c, 3, now(), now())"
            ),
            {"t": tenant.id, "c": customer},
        )
    code, out, err = await _cli(
        settings, "erase", str(customer), "--tenant", tenant.id, "--wait", "0",
        "--reference", "GDPR-42",
    )  # fmt: skip
    assert code == 0, err
    receipt = orjson.loads(out)
    assert receipt["customer_id"] == str(customer)
    assert {s["service"] for s in receipt["services"]} == {"ingest", "journey", "alerts"}
    records = await read_topic(
        settings,  # type: ignore[arg-type]
        settings.topic_privacy,
        until=lambda rs: any(receipt["id"].encode() in r.value for r in rs),
    )
    sent = [
        CustomerErasureRequested.model_validate_json(r.value)
        for r in records
        if receipt["id"].encode() in r.value
    ]
    assert sent[0].customer_ids == [str(customer)]
    assert len(sent[0].identifier_hashes) == 1
    assert b"cli@erase.test" not in records[-1].value
    audit = await _one(
        db,
        "SELECT actor, target, detail::text FROM auth.audit_log WHERE tenant_id = :t "
        "AND action = 'customer.erasure_requested'",
        t=tenant.id,
    )
    assert tuple(audit[:2]) == ("key:cli", str(customer))
    assert "cli@erase.test" not in audit[2]
    assert "GDPR-42" in audit[2]
