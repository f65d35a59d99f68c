"""Re-publishing stored events to the normalized topic: the way back after a broker lost data.

Events come from ingest's event store (``ingest.event``) exactly as stored, in event-time order,
keyed as the worker keys them. Downstream (journey) is idempotent on tenant and event id, so
what it already applied is skipped and only what the broker lost is applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.ingest.config import IngestSettings
from services.ingest.publish import STRUCTURED_HEADERS, publish
from shared.db import Database, raw_connection
from shared.events import parse_normalized
from shared.kafka import make_producer


class TimeField(StrEnum):
    received = "received"  # when ingest stored the event (what a broker outage lost)
    time = "time"  # the event's own time


@dataclass(frozen=True)
class Selection:
    tenant: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    field: TimeField = TimeField.received

    def where(self) -> tuple[str, list[Any]]:
        column = "received_at" if self.field is TimeField.received else "time"
        clauses, args = [], []
        for sql, value in (
            ("tenant_id = ${}", self.tenant),
            (f"{column} >= ${{}}", self.since),
            (f"{column} < ${{}}", self.until),
        ):
            if value is not None:
                args.append(value)
                clauses.append(sql.format(len(args)))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


Progress = Callable[[int, int], None]  # (published so far, total)


async def count(db: Database, selection: Selection) -> Counter[str]:
    """Stored events matching ``selection``, by tenant."""
    where, args = selection.where()
    async with db.session() as session:
        conn = await raw_connection(session)
        rows = await conn.fetch(
            f"SELECT tenant_id, count(*) AS n FROM ingest.event{where} GROUP BY 1 ORDER BY 1",
            *args,
        )
    return Counter({r["tenant_id"]: r["n"] for r in rows})


async def replay(
    settings: IngestSettings,
    selection: Selection,
    *,
    dry_run: bool = False,
    batch_size: int = 5000,
    progress: Progress | None = None,
) -> Counter[str]:
    """Publish the matching stored events to the normalized topic; counts by tenant."""
    db = Database(settings.dsn, pool_size=1, application_name="waypoint-replay")
    try:
        totals = await count(db, selection)
        if dry_run or not totals:
            return totals
        await _publish_all(db, settings, selection, sum(totals.values()), batch_size, progress)
        return totals
    finally:
        await db.dispose()


async def _publish_all(
    db: Database,
    settings: IngestSettings,
    selection: Selection,
    total: int,
    batch_size: int,
    progress: Progress | None,
) -> None:
    where, args = selection.where()
    query = f"SELECT envelope::text AS envelope FROM ingest.event{where} ORDER BY time, event_id"
    producer = make_producer(settings)
    await producer.start()
    try:
        async with db.session() as session:
            conn = await raw_connection(session)  # a cursor needs the session's transaction
            batch: list[tuple[bytes, bytes]] = []
            done = 0
            async for row in conn.cursor(query, *args, prefetch=batch_size):
                envelope = parse_normalized(row["envelope"].encode())
                batch.append((envelope.primary_key().encode(), envelope.to_json()))
                if len(batch) >= batch_size:
                    await publish(producer, settings.topic_normalized, batch, STRUCTURED_HEADERS)
                    done += len(batch)
                    batch = []
                    if progress is not None:
                        progress(done, total)
            await publish(producer, settings.topic_normalized, batch, STRUCTURED_HEADERS)
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        await producer.stop()
