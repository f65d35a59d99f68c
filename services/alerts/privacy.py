"""Alerts' part of an erasure: the customer's scores, alerts, deliveries and churn outcomes
deleted, and a tombstone of its customer ids so a replayed activity does not score it again.
Run as the alerts ``privacy`` process (shared/privacy/erasure.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from services.alerts.config import AlertsSettings
from shared.events.activity import CustomerActivity
from shared.events.erasure import CustomerErasureRequested
from shared.logging import configure_logging
from shared.privacy.erasure import run_consumer
from shared.privacy.metrics import ERASED_DROPPED

# (table, condition on $1 tenant and $2 customer ids), children before parents.
_TABLES = (
    (
        "delivery_log",
        "alert_id IN (SELECT id FROM alerts.alert WHERE tenant_id = $1 "
        "AND customer_id = ANY($2::text[]))",
    ),
    (
        "outbox",
        "alert_id IN (SELECT id FROM alerts.alert WHERE tenant_id = $1 "
        "AND customer_id = ANY($2::text[]))",
    ),
    ("alert", "customer_id = ANY($2::text[])"),
    ("score_history", "customer_id = ANY($2::text[])"),
    ("customer_state", "customer_id = ANY($2::text[])"),
    ("churn_outcome", "customer_id = ANY($2::text[])"),
    ("engagement_change", "customer_id = ANY($2::text[])"),
)


async def erase(conn: asyncpg.Connection, command: CustomerErasureRequested) -> dict[str, int]:
    tenant, ids = command.tenant, command.customer_ids
    await conn.execute(
        "INSERT INTO alerts.erased_customer (tenant_id, customer_id, erasure_id) "
        "SELECT $1, c, $2::uuid FROM unnest($3::text[]) AS c ON CONFLICT DO NOTHING",
        tenant,
        command.erasure_id,
        ids,
    )
    counts: dict[str, int] = {}
    for table, where in _TABLES:
        status = await conn.execute(
            f"DELETE FROM alerts.{table} WHERE tenant_id = $1 AND {where}", tenant, ids
        )
        counts[table] = int(status.split()[-1])
    return counts


async def without_erased(
    conn: asyncpg.Connection, activities: Sequence[CustomerActivity]
) -> list[CustomerActivity]:
    """``activities`` less those of erased customers (counted)."""
    if not activities:
        return list(activities)
    rows = await conn.fetch(
        "SELECT tenant_id, customer_id FROM alerts.erased_customer e "
        "JOIN unnest($1::text[], $2::text[]) AS u(t, c) "
        "ON e.tenant_id = u.t AND e.customer_id = u.c",
        [a.tenant for a in activities],
        [a.customer_id for a in activities],
    )
    if not rows:
        return list(activities)
    gone = {(r["tenant_id"], r["customer_id"]) for r in rows}
    kept = [a for a in activities if (a.tenant, a.customer_id) not in gone]
    ERASED_DROPPED.labels("alerts").inc(len(activities) - len(kept))
    return kept


async def run(settings: AlertsSettings, *, stop: asyncio.Event | None = None) -> None:
    """Apply erasure commands until stopped."""
    if stop is None:
        configure_logging("alerts-privacy", level=settings.log_level, json=settings.log_json)
    await run_consumer(
        settings,
        service="alerts",
        group_id=f"{settings.consumer_group}-privacy",
        apply=erase,
        stop=stop,
    )
