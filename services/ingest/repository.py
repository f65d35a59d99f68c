"""Reads and writes of the ``ingest`` schema. Never commits: the caller's unit of work does.

The hot path (``store_events``) COPYs a batch into a temporary table and moves it with one
``INSERT … SELECT … ON CONFLICT DO NOTHING``, so redelivered events are skipped by the primary key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.cursors import cursor_key, cursor_time, invalid_cursor
from shared.db import raw_connection

EVENT_COLUMNS = (
    "tenant_id",
    "event_id",
    "type",
    "source",
    "time",
    "received_at",
    "channel",
    "identifiers",
    "envelope",
)
_STAGE = "ingest_event_stage"
_COLS = ", ".join(EVENT_COLUMNS)


@dataclass
class Stored:
    """What a batch did to the store."""

    new: dict[str, int] = field(default_factory=dict)  # new rows per channel ("" = none given)
    # (tenant, event id) → the envelope stored earlier, for rows that were already there: what
    # is published must be what is stored, even when a resent event differs from the original.
    earlier: dict[tuple[str, str], str] = field(default_factory=dict)


async def store_events(session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> Stored:
    """Insert the rows not stored yet; say how many were new and what the others hold."""
    if not rows:
        return Stored()
    conn = await raw_connection(session)
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
        f"(LIKE ingest.event INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(_STAGE, records=rows, columns=EVENT_COLUMNS)
    stored = await conn.fetch(
        f"WITH new AS (INSERT INTO ingest.event ({_COLS}) SELECT {_COLS} FROM {_STAGE} "
        f"ON CONFLICT DO NOTHING RETURNING channel) "
        f"SELECT coalesce(channel, '') AS channel, count(*) AS n FROM new GROUP BY 1"
    )
    result = Stored(new={r["channel"]: r["n"] for r in stored})
    if sum(result.new.values()) < len(rows):  # some were stored by an earlier batch
        earlier = await conn.fetch(
            f"SELECT e.tenant_id, e.event_id, e.envelope::text AS envelope FROM {_STAGE} s "
            "JOIN ingest.event e USING (tenant_id, event_id) "
            "WHERE e.xmin <> pg_current_xact_id()::xid"  # not written by this transaction
        )
        result.earlier = {(r["tenant_id"], r["event_id"]): r["envelope"] for r in earlier}
    await conn.execute(f"TRUNCATE {_STAGE}")
    return result


async def store_dead_letters(session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
    """Log refused records once each (a redelivered record hits the unique source index)."""
    if not rows:
        return
    conn = await raw_connection(session)
    await conn.executemany(
        "INSERT INTO ingest.dead_letter (tenant_id, reason, message, event_id, source_topic, "
        "source_partition, source_offset, payload, payload_bytes, payload_digest) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        rows,
    )


@dataclass(frozen=True)
class Cursor:
    time: datetime
    event_id: str

    def encode(self) -> str:
        raw = orjson.dumps([self.time.isoformat(), self.event_id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """The cursor ``encode`` made, or a 422 naming the ``cursor`` parameter."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            moment, event_id = orjson.loads(raw)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise invalid_cursor() from exc
        return cls(cursor_time(moment), cursor_key(event_id))


async def find_events(
    session: AsyncSession,
    *,
    tenant_id: str,
    identifier_keys: list[str] | None,
    event_type: str | None,
    since: datetime | None,
    limit: int,
    cursor: Cursor | None,
) -> list[Any]:
    """Stored events of one tenant, newest first, keyset-paged on (time, event id)."""
    clauses = ["tenant_id = :tenant"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    if identifier_keys:
        clauses.append("identifiers && CAST(:ids AS text[])")
        params["ids"] = identifier_keys
    if event_type:
        clauses.append("type = :type")
        params["type"] = event_type
    if since:
        clauses.append("time >= :since")
        params["since"] = since
    if cursor:
        clauses.append("(time, event_id) < (:c_time, :c_id)")
        params["c_time"], params["c_id"] = cursor.time, cursor.event_id
    query = text(
        "SELECT event_id, type, time, received_at, channel, identifiers, envelope "
        f"FROM ingest.event WHERE {' AND '.join(clauses)} "
        "ORDER BY time DESC, event_id DESC LIMIT :limit"
    )
    return list((await session.execute(query, params)).mappings())


async def recent_dead_letters(
    session: AsyncSession, *, tenant_id: str, reason: str | None, limit: int
) -> list[Any]:
    """The tenant's most recent rejects (records whose tenant could not be read are not shown)."""
    clauses = ["tenant_id = :tenant"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    if reason:
        clauses.append("reason = :reason")
        params["reason"] = reason
    query = text(
        "SELECT id, reason, message, event_id, source_topic, source_partition, source_offset, "
        "payload, payload_bytes, received_at FROM ingest.dead_letter "
        f"WHERE {' AND '.join(clauses)} ORDER BY received_at DESC, id DESC LIMIT :limit"
    )
    return list((await session.execute(query, params)).mappings())
