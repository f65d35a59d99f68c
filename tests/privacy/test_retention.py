"""Retention (issue 12, item 2): per-tenant days, purged in small batches, measured; another
tenant and recent rows untouched."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text

from shared.config import CommonSettings
from shared.db import Database, raw_connection
from shared.privacy.retention import policies, purge, set_policy
from tests.support import TenantFactory


def _purged(table: str) -> float:
    return REGISTRY.get_sample_value("waypoint_retention_purged_rows_total", {"table": table}) or 0


async def _insert(db: Database, tenant: str, at: datetime) -> None:
    """One stored event, one dead letter and one journey event at ``at``."""
    event_id = uuid.uuid4().hex
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            "INSERT INTO ingest.event (tenant_id, event_id, type, source, time, received_at, "
            "identifiers, envelope) VALUES ($1, $2, 'contact.started', 't', $3, $3, "
            "ARRAY['email:x@y.test'], '{}'::jsonb)",
            tenant,
            event_id,
            at,
        )
        await conn.execute(
            "INSERT INTO ingest.dead_letter (tenant_id, reason, message, source_topic, "
            "source_partition, source_offset, payload, payload_bytes, payload_digest, "
            "received_at) VALUES ($1, 'schema', 'm', 't', 0, 0, 'p', 1, $2, $3)",
            tenant,
            event_id,
            at,
        )
        await conn.execute(
            "INSERT INTO journey.event (tenant_id, event_id, type, time, identifier_keys, "
            "outcome, rule, envelope) VALUES ($1, $2, 'contact.started', $3, "
            "ARRAY['email:x@y.test'], 'matched', 'manual', '{}'::jsonb)",
            tenant,
            event_id,
            at,
        )


async def _counts(db: Database, tenant: str) -> dict[str, int]:
    out = {}
    async with db.session() as session:
        for table in ("ingest.event", "ingest.dead_letter", "journey.event"):
            out[table] = await session.scalar(
                text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant}
            )
    return out


async def test_each_tenant_keeps_its_data_for_its_own_days_purged_in_batches(
    db: Database, make_tenant: TenantFactory, settings_overrides: dict[str, Any], now: datetime
):
    short, other = await make_tenant(), await make_tenant()
    async with db.session() as session:
        await set_policy(
            await raw_connection(session),
            short.id,
            {"raw_events": 10, "dead_letters": 3, "timelines": 20},
        )
    for tenant in (short.id, other.id):
        for age in (1, 2, 5, 15, 15, 15, 15, 25, 25):  # days
            await _insert(db, tenant, now - timedelta(days=age))
    # Defaults of 0 (keep) for every other tenant of this shared test database.
    settings = CommonSettings(
        **{
            **settings_overrides,
            "retention_raw_events_days": 0,
            "retention_dead_letters_days": 0,
            "retention_timelines_days": 0,
            "retention_delivery_logs_days": 0,
            "retention_batch_rows": 2,
        }
    )
    async with db.session() as session:
        policy = (await policies(await raw_connection(session), {"raw_events": 0,
                  "dead_letters": 0, "timelines": 0, "delivery_logs": 0}))[short.id]  # fmt: skip
    assert policy == {"raw_events": 10, "dead_letters": 3, "timelines": 20, "delivery_logs": 0}
    before = {t: _purged(t) for t in ("ingest.event", "ingest.dead_letter", "journey.event")}
    ingest = await purge(db, "ingest", settings, now=now)
    journey = await purge(db, "journey", settings, now=now)
    alerts = await purge(db, "alerts", settings, now=now)
    assert ingest == {"ingest.event": 6, "ingest.dead_letter": 7}
    assert journey == {"journey.event": 2}
    assert alerts == {"alerts.delivery_log": 0}
    assert await _counts(db, short.id) == {
        "ingest.event": 3,
        "ingest.dead_letter": 2,
        "journey.event": 7,
    }
    assert await _counts(db, other.id) == dict.fromkeys(before, 9)
    assert _purged("ingest.event") == before["ingest.event"] + 6
    assert REGISTRY.get_sample_value(
        "waypoint_retention_purge_seconds_count", {"service": "ingest"}
    )
    # Idempotent: a second run finds nothing more.
    assert await purge(db, "ingest", settings, now=now) == {
        "ingest.event": 0,
        "ingest.dead_letter": 0,
    }
