"""A merge's split boundary (the tenant's last event) is read from one index entry, not by
scanning every tenant's events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from services.journey.identity.merges import LAST_SEQ
from shared.db import Database, raw_connection

INDEX = "ix_event_tenant_id_seq"
TENANTS, EVENTS_EACH = 30, 1000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def plan_of(explained: Any) -> list[dict[str, Any]]:
    document = orjson.loads(explained) if isinstance(explained, str) else explained
    return list(nodes(document[0]["Plan"]))


async def test_the_tenants_last_event_is_one_backward_index_read(db: Database):
    prefix = f"plan-{uuid.uuid4().hex[:8]}"
    tenants = [f"{prefix}-{n}" for n in range(TENANTS)]
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            """INSERT INTO journey.event (tenant_id, event_id, customer_id, type, time,
                   identifier_keys, outcome, rule, envelope)
               SELECT t, 'e' || n, NULL, 'contact.started', now(), '{}', 'new', 'none', '{}'
               FROM unnest($1::text[]) AS t, generate_series(1, $2) AS n""",
            tenants,
            EVENTS_EACH,
        )
    try:
        async with db.session() as session:
            conn = await raw_connection(session)
            await conn.execute("ANALYZE journey.event")
            tenant = tenants[TENANTS // 2]
            expected = await conn.fetchval(
                "SELECT max(seq) FROM journey.event WHERE tenant_id = $1 AND seq > 0", tenant
            )
            assert await conn.fetchval(LAST_SEQ, tenant) == expected

            # The plan for this tenant's value, and the generic plan a prepared statement
            # settles on after five runs: both read the new index backwards, nothing else.
            custom = plan_of(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {LAST_SEQ}", tenant))
            await conn.execute(f"PREPARE last_seq(text) AS {LAST_SEQ}")
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            generic = plan_of(
                await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE last_seq('{tenant}')")
            )
            await conn.execute("DEALLOCATE last_seq")
            for plan in (custom, generic):
                types = [n["Node Type"] for n in plan]
                assert "Seq Scan" not in types, types
                assert "Bitmap Heap Scan" not in types, types
                [scan] = [n for n in plan if n.get("Index Name") == INDEX]
                assert scan["Node Type"] in {"Index Only Scan", "Index Scan"}
                assert scan["Scan Direction"] == "Backward"

            analyzed = plan_of(
                await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {LAST_SEQ}", tenant)
            )
            [scan] = [n for n in analyzed if n.get("Index Name") == INDEX]
            assert scan["Actual Rows"] == 1  # one index entry of the tenant's 1,000 events
    finally:
        async with db.session() as session:
            conn = await raw_connection(session)
            await conn.execute("DELETE FROM journey.event WHERE tenant_id = ANY($1)", tenants)
