"""Engagement changes, published to journey (topic ``waypoint.customer.engagement``) after
their transaction commits, without losing one.

Whatever changes a customer's engagement — the worker scoring an activity, the decay scheduler,
an alert opened, extended, acknowledged or resolved — bumps the customer's row in
``alerts.engagement_change`` in that same transaction (``mark_changed``): a transactional outbox
with one row per customer. The relay (a task of the alerts worker process; any number may run)
claims rows whose version is ahead of the published one — a short transaction that takes a
lease on them (``FOR UPDATE SKIP LOCKED``, so relays share the work) and reads the customers'
current engagement — publishes one message per customer, awaits the broker's acknowledgement,
then records the version it published. Writers never wait for the broker: a change committed
while its row is being published stays pending and goes out in the next round.

- Nothing is published before the change commits: the relay only sees committed rows.
- Nothing is lost: until the broker acknowledges, the row stays pending and is retried (counted
  in ``waypoint_alerts_engagement_publish_failures_total``, visible in
  ``waypoint_alerts_engagement_backlog``). A relay that dies mid-round leaves its lease to
  expire, and another (or the restarted one) publishes the rows again: at least once; consumers
  keep the highest version.
- Changes coalesce: a customer changed ten times before the relay runs is published once, with
  the latest state (each message is a whole snapshot, never a delta).

LISTEN wakes the relay when a change commits; polling every ``engagement_poll_seconds`` is the
fallback. The relay is ``shared.outbox.OutboxRelay`` with this table as its store
(``EngagementChanges``) and the metrics above; a failed round is retried after 2·poll, doubling
up to 60 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from services.alerts.config import AlertsSettings
from services.alerts.metrics import (
    ENGAGEMENT_BACKLOG,
    ENGAGEMENT_DELAY,
    ENGAGEMENT_PUBLISH_FAILURES,
    ENGAGEMENT_PUBLISHED,
)
from services.alerts.state import load_models, loads
from services.alerts.tables import ENGAGEMENT_CHANNEL
from shared.db import Database, raw_connection
from shared.events.engagement import ChurnAlert, CustomerEngagementChanged
from shared.listen_loop import Backoff
from shared.outbox import OutboxRelay, Outgoing, RelayMetrics, Send


def change_upsert(source: str) -> str:
    """``INSERT`` bumping the engagement version of the (tenant, customer) pairs ``source``
    yields. The version: the previous one + 1, and at least the change's time in µs (so
    versions keep growing even if this table is ever rebuilt); the row lock serialises writers
    of one customer."""
    return f"""
INSERT INTO alerts.engagement_change (tenant_id, customer_id, version, changed_at)
SELECT u.t, u.c, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, clock_timestamp()
FROM {source} AS u(t, c)
ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
    version = GREATEST(alerts.engagement_change.version + 1, EXCLUDED.version),
    changed_at = EXCLUDED.changed_at"""


_MARK = change_upsert("unnest($1::text[], $2::text[])")

# Lease the oldest pending rows (skipping those another relay holds or leased), and read the
# customers' engagement in the same statement.
_CLAIM = """
WITH due AS (
    SELECT tenant_id, customer_id FROM alerts.engagement_change
    WHERE version > published_version
      AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
    ORDER BY changed_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE alerts.engagement_change e
    SET claimed_until = clock_timestamp() + make_interval(secs => $2)
    FROM due WHERE e.tenant_id = due.tenant_id AND e.customer_id = due.customer_id
    RETURNING e.tenant_id, e.customer_id, e.version, e.changed_at, e.claimed_until
)
SELECT c.tenant_id, c.customer_id, c.version, c.changed_at, c.claimed_until,
       extract(epoch FROM clock_timestamp() - c.changed_at)::float8 AS age_s,
       s.score, s.scored_at, s.segment, s.merged_into, s.contributions::text AS contributions,
       a.id AS alert_id, a.status AS alert_status, a.rules::text AS alert_rules,
       a.score AS alert_score, a.threshold AS alert_threshold, a.opened_at AS alert_opened_at,
       a.acknowledged_at AS alert_acknowledged_at, a.owner AS alert_owner,
       a.explanation ->> 'summary' AS alert_summary
FROM claimed c
LEFT JOIN alerts.customer_state s ON s.tenant_id = c.tenant_id AND s.customer_id = c.customer_id
LEFT JOIN alerts.alert a ON a.id = s.open_alert_id AND a.status <> 'resolved'
ORDER BY c.tenant_id, c.customer_id
"""

# The version published (a writer may have bumped it meanwhile: then the row stays pending), and
# the lease given back, unless it expired and another relay holds the row now.
_SETTLE = """
UPDATE alerts.engagement_change e SET
    published_version = CASE WHEN $4 THEN GREATEST(e.published_version, u.v)
                             ELSE e.published_version END,
    published_at = CASE WHEN $4 THEN now() ELSE e.published_at END,
    claimed_until = CASE WHEN e.claimed_until = u.lease THEN NULL ELSE e.claimed_until END
FROM unnest($1::text[], $2::text[], $3::int8[], $5::timestamptz[]) AS u(t, c, v, lease)
WHERE e.tenant_id = u.t AND e.customer_id = u.c
"""


async def mark_changed(conn: asyncpg.Connection, keys: Iterable[tuple[str, str]]) -> int:
    """Record, in the caller's transaction, that these customers' engagement changed; a NOTIFY
    wakes the relays at commit. Returns how many customers were marked."""
    ordered = sorted(set(keys))  # one lock order for every writer
    if not ordered:
        return 0
    await conn.execute(_MARK, [t for t, _ in ordered], [c for _, c in ordered])
    await conn.execute("SELECT pg_notify($1, '')", ENGAGEMENT_CHANNEL)
    return len(ordered)


def message(row: asyncpg.Record, threshold: float | None) -> CustomerEngagementChanged:
    """The customer's current engagement, as one claimed row of ``_CLAIM`` holds it."""
    alert = None
    if row["alert_id"] is not None:
        alert = ChurnAlert(
            alert_id=str(row["alert_id"]),
            status=row["alert_status"],
            rules=loads(row["alert_rules"], []),
            score=row["alert_score"],
            threshold=row["alert_threshold"],
            opened_at=row["alert_opened_at"],
            acknowledged_at=row["alert_acknowledged_at"],
            owner=row["alert_owner"],
            summary=row["alert_summary"],
        )
    points: dict[str, Any] = loads(row["contributions"], {}).get("points") or {}
    return CustomerEngagementChanged(
        tenant=row["tenant_id"],
        customer_id=row["customer_id"],
        version=row["version"],
        changed_at=row["changed_at"],
        score=row["score"],
        scored_at=row["scored_at"],
        segment=row["segment"],
        threshold=threshold,
        contributions={k: float(v) for k, v in points.items() if v is not None},
        alert=alert,
        merged_into=row["merged_into"],
    )


async def settle(db: Database, rows: Sequence[asyncpg.Record], *, published: bool) -> None:
    """End claimed rows' lease; with ``published``, record the versions they held as published."""
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            _SETTLE,
            [r["tenant_id"] for r in rows],
            [r["customer_id"] for r in rows],
            [r["version"] for r in rows],
            published,
            [r["claimed_until"] for r in rows],
        )


class EngagementChanges:
    """``alerts.engagement_change`` as the relay's store: a round leases the rows in one short
    transaction, sends the customers' current engagement, then settles them in another."""

    def __init__(self, settings: AlertsSettings):
        self.topic = settings.topic_engagement
        self.lease_seconds = settings.engagement_publish_timeout_seconds * 3

    async def publish_round(self, db: Database, limit: int, send: Send) -> Sequence[Outgoing]:
        async with db.session() as session:
            conn = await raw_connection(session)
            rows = await conn.fetch(_CLAIM, limit, self.lease_seconds)
            if not rows:
                return []
            models = await load_models(conn, sorted({r["tenant_id"] for r in rows}))
        outgoing = []
        for r in rows:
            model = models[r["tenant_id"]].for_segment(r["segment"] or "default")
            change = message(r, model.thresholds.alert_below)
            outgoing.append(
                Outgoing(self.topic, change.kafka_key(), change.to_json(), float(r["age_s"]))
            )
        try:
            await send(outgoing)
        except BaseException:
            await asyncio.shield(settle(db, rows, published=False))  # retry soon, not at expiry
            raise
        await settle(db, rows, published=True)
        return outgoing

    async def backlog(self, db: Database) -> tuple[int, float]:
        async with db.session() as session:
            conn = await raw_connection(session)
            pending: int = await conn.fetchval(
                "SELECT count(*) FROM alerts.engagement_change WHERE version > published_version"
            )
        return pending, 0.0  # the age is not measured (no gauge for it)


def relay_for(settings: AlertsSettings, db: Database, producer: AIOKafkaProducer) -> OutboxRelay:
    """The engagement relay (a task of the worker process)."""
    poll = settings.engagement_poll_seconds
    return OutboxRelay(
        service="alerts",
        store=EngagementChanges(settings),
        db=db,
        producer=producer,
        dsn=settings.dsn,
        notify_channel=ENGAGEMENT_CHANNEL,
        batch_size=settings.engagement_batch_size,
        publish_timeout_seconds=settings.engagement_publish_timeout_seconds,
        poll_seconds=poll,
        metrics=RelayMetrics(
            published=ENGAGEMENT_PUBLISHED,
            failures=ENGAGEMENT_PUBLISH_FAILURES,
            backlog=ENGAGEMENT_BACKLOG,
            delay=ENGAGEMENT_DELAY,
        ),
        retry=Backoff(base=2 * poll, cap=60.0, jitter=0.0),
        drain_on_stop=False,
        event_prefix="engagement",
        log_fields={},
    )
