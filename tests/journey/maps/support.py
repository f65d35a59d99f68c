"""Helpers for map tests: apply events through the worker's real applier, read the stored map."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.journey.applier import ChunkApplier, Incoming
from services.journey.config import JourneySettings
from services.journey.maps import maintain
from shared.db import Database, asyncpg_dsn, raw_connection
from shared.events import validate_event
from shared.migrations import upgrade
from tests.journey.maps.reference import Ev

MAP_TABLES = ("map_node", "map_edge", "map_journey", "map_step", "map_customer", "map_segment")


def envelope(tenant: str, ev: Ev, base: datetime, identifiers: list[dict[str, Any]]) -> Incoming:
    raw = {
        "specversion": "1.0",
        "id": ev.id,
        "source": "tests",
        "type": ev.type,
        "time": (base + timedelta(microseconds=ev.t)).isoformat(),
        "tenant": tenant,
        "data": {"identifiers": identifiers, **ev.data},
    }
    env = validate_event(raw, now=datetime.now(UTC))
    return Incoming(env, env.to_json())


def email(tenant: str, customer: str) -> dict[str, str]:
    return {"type": "email", "value": f"{customer}-{tenant}@customer.test", "verified_by": "login"}


async def apply_chunk(db: Database, settings: JourneySettings, items: list[Incoming]) -> None:
    async with db.session() as session:
        await ChunkApplier(await raw_connection(session), settings).run(items)


async def deliver(
    db: Database,
    settings: JourneySettings,
    items: list[Incoming],
    *,
    cuts: list[int] | None = None,
    drain_after: set[int] | None = None,
) -> None:
    """Apply ``items`` in chunks cut at ``cuts``; drain the map after the chunks listed."""
    bounds = sorted(set(cuts or []))
    for n, (lo, hi) in enumerate(zip([0, *bounds], [*bounds, len(items)], strict=True)):
        if hi > lo:
            await apply_chunk(db, settings, items[lo:hi])
        if drain_after and n in drain_after:
            await maintain.drain(db, limit=3)
    await maintain.drain(db)


def components(events: list[Ev], links: list[tuple[int, int, int]]) -> dict[str, str]:
    """Each customer's surviving customer once the ``links`` (time, a, b) merge ``c{a}`` and
    ``c{b}``: one representative per connected group (union-find)."""
    parent = {e.customer: e.customer for e in events}
    for _, a, b in links:
        parent.setdefault(f"c{a}", f"c{a}")
        parent.setdefault(f"c{b}", f"c{b}")

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for _, a, b in links:
        parent[find(f"c{a}")] = find(f"c{b}")
    return {c: find(c) for c in parent}


async def deliver_log(
    db: Database,
    settings: JourneySettings,
    tenant: str,
    events: list[Ev],
    links: list[tuple[int, int, int]],
    base: datetime,
    rng: random.Random,
) -> None:
    """Deliver a generated log as the worker meets it: each event with its customer's e-mail,
    each link (time, a, b) as an ``identity.linked`` event carrying both customers' e-mails
    (a merge), shuffled, some replayed, in random chunks, the compactor draining in between."""
    items = [envelope(tenant, e, base, [email(tenant, e.customer)]) for e in events]
    for n, (t, a, b) in enumerate(links):
        bridge = Ev(f"br{n}", "identity.linked", t * 1_000_000, {})
        items.append(
            envelope(tenant, bridge, base, [email(tenant, f"c{a}"), email(tenant, f"c{b}")])
        )
    rng.shuffle(items)
    items += rng.sample(items, k=min(len(items), rng.randint(0, 4)))  # replays
    cuts = [rng.randint(0, len(items)) for _ in range(rng.randint(0, 6))]
    drains = {n for n in range(len(cuts) + 1) if rng.random() < 0.6}
    await deliver(db, settings, items, cuts=cuts, drain_after=drains)


def _normal(value: Any) -> str:
    if isinstance(value, list):  # segment vectors: trailing zeros mean nothing
        while value and value[-1] == 0:
            value = value[:-1]
    return str(value)


async def snapshot(conn: asyncpg.Connection, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every map row of the tenant, sorted (to compare two maps exactly)."""
    out = {}
    for table in MAP_TABLES:
        rows = await conn.fetch(
            f"SELECT * FROM journey.{table} WHERE tenant_id = $1",  # noqa: S608
            tenant,
        )
        out[table] = sorted(
            tuple(_normal(v) for k, v in r.items() if k != "updated_at") for r in rows
        )
    return out


async def stored_totals(
    conn: asyncpg.Connection, tenant: str, *, kind: int, segment: str = "", grain: str = "d"
) -> dict[str, Counter]:
    """Node stats and edges summed over every period of one segment row."""
    out: dict[str, Counter] = {s: Counter() for s in ("count", "starts", "ends")}
    out["edges"], out["durations"] = Counter(), Counter()
    idx = 0
    if segment:
        idx = await conn.fetchval(
            "SELECT idx FROM journey.map_segment WHERE tenant_id = $1 AND segment = $2",
            tenant,
            segment,
        )
        if idx is None:
            return out
    nodes = await conn.fetch(
        """SELECT activity, stat, sum(v[$4])::bigint FROM journey.map_node
           WHERE tenant_id = $1 AND kind = $2 AND grain = $3
           GROUP BY 1, 2""",
        tenant,
        kind,
        grain,
        idx + 1,
    )
    edges = await conn.fetch(
        """SELECT source, target, sum(n[$4])::bigint, sum(us[$4])::bigint FROM journey.map_edge
           WHERE tenant_id = $1 AND kind = $2 AND grain = $3
           GROUP BY 1, 2""",
        tenant,
        kind,
        grain,
        idx + 1,
    )
    for activity, stat, value in nodes:
        if value:
            out.setdefault(stat, Counter())[activity] = value
    for a, b, n, us in edges:
        if n:
            out["edges"][(a, b)] = n
            out["durations"][(a, b)] = us
    return out


def new_tenant() -> str:
    return f"map-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def own_database(server: str) -> AsyncIterator[tuple[Database, str]]:
    """A fresh, migrated database on the session's server ``server`` (a DSN): (its Database, its
    DSN). No compactor runs on it unless the test starts one: the session's worker fixtures fold
    the shared database's map queue (at once: tests/conftest.py sets no settle delay), so a test
    that must see queue entries nobody else folds needs a database of its own."""
    name = f"maps_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(server)
    dsn = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    database = Database(dsn, pool_size=2, application_name="tests-maps-own")
    try:
        await upgrade(database)
        yield database, dsn
    finally:
        await database.dispose()
        admin = await asyncpg.connect(asyncpg_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
