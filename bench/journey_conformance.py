"""Designed-vs-real benchmark (issue 9): conformance over the journey-map benchmark's log
(``bench/_map_log.py``: 200,000 customers × 10 steps = 2,000,000 steps).

Conformance reads only the map's stored journeys (``journey.map_journey``), so the log is built
here with the map's own pure functions (``rules.build_steps`` / ``rules.derive``: exactly the rows
the compactor writes) and copied in, instead of the 20-minute build through the worker; then,
ROUNDS times each, the conformance query as the endpoint runs it (``service.conformance`` on an
asyncpg connection, then JSON rendering): whole log, one week, one segment, ``by=age_group``, and
one drill-down page. Target: p99 <= 500 ms.

The design is saved and counted as ``PUT /v1/designed-journeys/{name}`` does it
(``repo.save`` + ``counts.recount`` over the stored journeys, in one transaction, timed), so the
reads are served from the maintained conformance counts (``computed_from: counts``).

Environment: BENCH_CONF_CUSTOMERS (200,000), BENCH_CONF_ROUNDS (20). Prints figures, then one
JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _journey_stack import Stack, machine  # noqa: E402
from _map_log import customer_events  # noqa: E402

from services.journey.conformance import counts, service  # noqa: E402
from services.journey.conformance import repository as repo  # noqa: E402
from services.journey.conformance.schemas import DesignedJourney, DesignedJourneyPublic  # noqa: E402
from services.journey.maps import rules  # noqa: E402
from services.journey.maps.schemas import MapQuery  # noqa: E402
from services.journey.maps.settings import MapConfig  # noqa: E402
from shared.db import asyncpg_dsn  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CONF_CUSTOMERS", "200000"))
ROUNDS = int(os.environ.get("BENCH_CONF_ROUNDS", "20"))
TENANT = "bench-conf"
BASE = datetime(2026, 6, 1, tzinfo=UTC)
DESIGN = DesignedJourney.model_validate(
    {
        "description": "a complaint taken to chat within the hour, maybe a call, an e-mail after",
        "steps": [
            {"activity": "social:social_mention"},
            {"activity": "web_chat:web_chat", "max_wait_s": 3600},
            {"activity": "phone:inbound_call", "optional": True},
            {"activity": "email:email_support"},
        ],
    }
)
COLUMNS = [
    "tenant_id", "customer_id", "kind", "journey_key", "day", "start_at", "steps", "activities",
    "times_us", "age_group", "region", "tier", "lifecycle_stage", "tenure",
]  # fmt: skip


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def journey_rows(i: int, config: MapConfig) -> tuple[list[tuple[Any, ...]], int]:
    facts = [
        rules.Fact(e["id"], e["type"], rules.to_us(datetime.fromisoformat(e["time"])), e["data"])
        for e in customer_events(i, TENANT, BASE)
    ]
    steps = rules.build_steps(facts)
    profile = rules.new_profile()
    for fact in facts:
        rules.fold_profile(profile, fact)
    _, rows = rules.derive(steps.values(), profile, window_us=config.window_us, bands=config.bands)
    customer = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-conf/{i}")
    out = []
    for (kind, key), (day, n, path, times, seg) in rows.items():
        out.append(
            (TENANT, customer, kind, key, rules.as_date(day), rules.from_us(times[0]), n,
             list(path), list(times), *seg)
        )  # fmt: skip
    return out, len(steps)


async def build(conn: asyncpg.Connection) -> dict[str, Any]:
    config = MapConfig()
    started = time.perf_counter()
    await conn.execute("DELETE FROM journey.map_journey WHERE tenant_id = $1", TENANT)
    batch: list[tuple[Any, ...]] = []
    steps = 0
    for i in range(CUSTOMERS):
        rows, n = journey_rows(i, config)
        batch += rows
        steps += n
        if len(batch) >= 50_000:
            await conn.copy_records_to_table("map_journey", schema_name="journey",
                                             records=batch, columns=COLUMNS)  # fmt: skip
            batch = []
        if i and i % 50_000 == 0:
            log(f"built {i:,} customers, {steps:,} steps")
    if batch:
        await conn.copy_records_to_table(
            "map_journey", schema_name="journey", records=batch, columns=COLUMNS
        )
    await conn.execute("ANALYZE journey.map_journey")
    episodes = await conn.fetchval(
        "SELECT count(*) FROM journey.map_journey WHERE tenant_id = $1 AND kind = 1", TENANT
    )
    return {"steps": steps, "episodes": episodes, "seconds": round(time.perf_counter() - started)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


async def count(conn: asyncpg.Connection) -> tuple[DesignedJourneyPublic, dict[str, Any]]:
    """The design saved and counted as the PUT does (one transaction)."""
    await conn.execute("DELETE FROM journey.designed_journey WHERE tenant_id = $1", TENANT)
    started, cpu = time.perf_counter(), time.process_time()
    async with conn.transaction():
        design = await repo.save(conn, TENANT, "bench", DESIGN)
        journeys = await counts.recount(conn, TENANT, design, MapConfig())
    rows = await conn.fetchval(
        "SELECT count(*) FROM journey.conformance_day WHERE tenant_id = $1", TENANT
    )
    figures = {
        "journeys_read": journeys,
        "seconds": round(time.perf_counter() - started, 1),
        "python_cpu_seconds": round(time.process_time() - cpu, 1),
        "count_rows": rows,
    }
    return design, figures


async def timed(
    conn: asyncpg.Connection, design: DesignedJourneyPublic, name: str, q: MapQuery, **kw: Any
) -> dict[str, Any]:
    config = MapConfig()
    samples = []
    body: dict[str, Any] = {}
    for _ in range(ROUNDS):
        started = time.perf_counter()
        if "deviation" in kw:
            match = service.deviation_filter(kw["deviation"])
            body = await service.journeys_page(
                conn, TENANT, design, config, q, match, limit=50, cursor=None
            )
        else:
            body = await service.conformance(conn, TENANT, design, config, q, by=kw.get("by"),
                                             limit=10)  # fmt: skip
        orjson.dumps(body)
        samples.append((time.perf_counter() - started) * 1000)
    figures = {
        "query": name,
        "first_ms": round(samples[0], 1),
        "p50_ms": round(statistics.median(samples), 1),
        "p99_ms": round(percentile(samples, 0.99), 1),
        "journeys": body.get("journeys", len(body.get("items", []))),
        "computed_from": body.get("computed_from"),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    log(json.dumps(figures))
    return figures


async def main() -> None:
    stack = Stack()
    try:
        await stack.prepare()
        conn = await asyncpg.connect(asyncpg_dsn(stack.settings.dsn))
        try:
            built = await build(conn)
            log(f"log: {json.dumps(built)}")
            design, counted = await count(conn)
            log(f"counted: {json.dumps(counted)} (load average {os.getloadavg()})")
            week = (date(2026, 6, 8), date(2026, 6, 15))
            results = [
                await timed(conn, design, "whole log", MapQuery()),
                await timed(conn, design, "one week", MapQuery(start=week[0], end=week[1])),
                await timed(
                    conn, design, "segment.region=emea", MapQuery(segment={"region": "emea"})
                ),
                await timed(conn, design, "by=age_group", MapQuery(), by="age_group"),
                await timed(
                    conn,
                    design,
                    "drill-down page (skipped social)",
                    MapQuery(),
                    deviation="skipped:social:social_mention",
                ),  # fmt: skip
            ]
        finally:
            await conn.close()
    finally:
        stack.close()
    print(json.dumps({"bench": "journey_conformance", "machine": machine(), "log": built,
                      "rounds": ROUNDS, "counted": counted, "results": results}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
