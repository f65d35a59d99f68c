"""Retention: per tenant, how long raw events, dead letters, timelines and delivery logs are
kept, purged by each service's privacy process in short batches.

Each batch is its own transaction deleting at most ``WAYPOINT_RETENTION_BATCH_ROWS`` rows found
through an index (``DELETE … WHERE ctid IN (SELECT ctid … LIMIT n)``), so no lock on a hot
table is held for longer than one small batch. Aggregates (the journey map, context summaries,
engagement scores) are not purged: they outlive the raw events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.config import CommonSettings
from shared.db import Database, raw_connection
from shared.logging import get_logger
from shared.privacy.metrics import RETENTION_FAILURES, RETENTION_PURGED, RETENTION_SECONDS

log = get_logger("privacy.retention")

KINDS = ("raw_events", "dead_letters", "timelines", "delivery_logs")


@dataclass(frozen=True)
class Target:
    kind: str
    table: str
    column: str
    order: str  # the indexed order the batch is read in


TARGETS: dict[str, list[Target]] = {
    "ingest": [
        Target("raw_events", "ingest.event", "time", "time"),
        Target("dead_letters", "ingest.dead_letter", "received_at", "received_at"),
    ],
    "journey": [Target("timelines", "journey.event", "time", "seq")],
    "alerts": [Target("delivery_logs", "alerts.delivery_log", "at", "id")],
}


def defaults(settings: CommonSettings) -> dict[str, int]:
    return {kind: getattr(settings, f"retention_{kind}_days") for kind in KINDS}


async def policies(conn: asyncpg.Connection, fallback: dict[str, int]) -> dict[str, dict[str, int]]:
    """Every tenant's days per kind (its own setting, else the default)."""
    rows = await conn.fetch(
        "SELECT t.id, r.raw_events_days, r.dead_letters_days, r.timelines_days, "
        "r.delivery_logs_days FROM auth.tenant t "
        "LEFT JOIN auth.tenant_retention r ON r.tenant_id = t.id ORDER BY t.id"
    )
    return {
        r["id"]: {k: fallback[k] if r[f"{k}_days"] is None else r[f"{k}_days"] for k in KINDS}
        for r in rows
    }


async def set_policy(conn: asyncpg.Connection, tenant: str, days: dict[str, int | None]) -> None:
    """Set a tenant's own days for the kinds given (None: back to the default)."""
    columns = [f"{k}_days" for k in KINDS if k in days]
    if not columns:
        return
    values = [days[k] for k in KINDS if k in days]
    names = ", ".join(columns)
    places = ", ".join(f"${i + 2}" for i in range(len(columns)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
    await conn.execute(
        f"INSERT INTO auth.tenant_retention (tenant_id, {names}) VALUES ($1, {places}) "
        f"ON CONFLICT (tenant_id) DO UPDATE SET {updates}, updated_at = now()",
        tenant,
        *values,
    )


async def purge(
    db: Database, service: str, settings: CommonSettings, *, now: datetime
) -> dict[str, int]:
    """One retention run of ``service``: rows purged per table."""
    started = time.perf_counter()
    async with db.session() as session:
        tenants = await policies(await raw_connection(session), defaults(settings))
    purged: dict[str, int] = {}
    batch = settings.retention_batch_rows
    for target in TARGETS[service]:
        total = 0
        for tenant, days in tenants.items():
            if days[target.kind] <= 0:
                continue
            cutoff = now - timedelta(days=days[target.kind])
            while True:
                async with db.session() as session:
                    status = await (await raw_connection(session)).execute(
                        f"DELETE FROM {target.table} WHERE ctid IN ("
                        f"SELECT ctid FROM {target.table} "
                        f"WHERE tenant_id = $1 AND {target.column} < $2 "
                        f"ORDER BY {target.order} LIMIT $3)",
                        tenant,
                        cutoff,
                        batch,
                    )
                done = int(status.split()[-1])
                total += done
                RETENTION_PURGED.labels(target.table).inc(done)
                if done < batch:
                    break
                await asyncio.sleep(0)  # let the process's other work in between batches
        purged[target.table] = total
    RETENTION_SECONDS.labels(service).observe(time.perf_counter() - started)
    if any(purged.values()):
        log.info("retention.purged", **purged)
    return purged


async def run_purges(
    db: Database, service: str, settings: CommonSettings, stop: asyncio.Event
) -> None:
    """Purge every ``WAYPOINT_RETENTION_INTERVAL_SECONDS`` until ``stop``; a failed run is
    logged and retried next time (the next run resumes where it stopped)."""
    while not stop.is_set():
        try:
            await purge(db, service, settings, now=datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - an outage must not stop erasures
            RETENTION_FAILURES.labels(service).inc()
            log.warning("retention.failed", error=str(exc)[:300])
        try:
            await asyncio.wait_for(stop.wait(), settings.retention_interval_seconds)
        except TimeoutError:
            pass
