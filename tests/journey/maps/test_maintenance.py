"""The stored map through the real applier, compactor and PostgreSQL equals a plain
recomputation, whatever the arrival order, chunking, replays and merges; a rebuild from the
stored events gives exactly the same rows."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.journey.config import JourneySettings
from services.journey.maps import rules
from services.journey.maps.rebuild import rebuild_from_events
from shared.db import Database, raw_connection
from tests.journey.maps.reference import Ev, ref_map
from tests.journey.maps.strategies import bridges, event_logs
from tests.journey.maps.support import (
    components,
    deliver_log,
    new_tenant,
    snapshot,
    stored_totals,
)

WINDOW = rules.DEFAULT_WINDOW_US


def age_groups(events: list[Ev]) -> dict[str, str | None]:
    """Per customer: the age_group of its latest (time, id) identity.linked event."""
    latest: dict[str, tuple[int, str, Any]] = {}
    for e in events:
        if e.type == "identity.linked" and "age_group" in e.data.get("traits", {}):
            rank = (e.t, e.id, e.data["traits"]["age_group"])
            if e.customer not in latest or rank > latest[e.customer]:
                latest[e.customer] = rank
    return {c: r[2] for c, r in latest.items()}


def check(stored: dict[str, Counter], events: list[Ev], kind: str) -> None:
    ref = ref_map(events, kind, WINDOW)
    assert +stored["count"] == ref.nodes
    assert +stored["starts"] == ref.starts
    assert +stored["ends"] == ref.ends
    assert +stored["edges"] == ref.edges
    assert +stored["durations"] == Counter({k: sum(v) for k, v in ref.durations.items()})
    # Invariants: sum of edge counts = steps − journeys; count = in + starts = out + ends.
    assert sum(stored["edges"].values()) == ref.steps - ref.journeys
    into, out = Counter(), Counter()
    for (a, b), n in stored["edges"].items():
        out[a] += n
        into[b] += n
    for a, n in stored["count"].items():
        assert n == into[a] + stored["starts"][a] == out[a] + stored["ends"][a]


async def run_example(
    dsn: str,
    journey_settings: JourneySettings,
    events: list[Ev],
    links: list[tuple[int, int, int]],
    rng: random.Random,
) -> None:
    db = Database(dsn, pool_size=2, application_name="tests-maps")
    tenant = new_tenant()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    try:
        await deliver_log(db, journey_settings, tenant, events, links, base, rng)

        owner = components(events, links)
        merged = [Ev(e.id, e.type, e.t, e.data, owner[e.customer]) for e in events]
        async with db.session() as session:
            conn = await raw_connection(session)
            active = await conn.fetchval(
                "SELECT count(*) FROM journey.customer WHERE tenant_id = $1 AND status = 'active'",
                tenant,
            )
            assert active == len(
                {owner[e.customer] for e in events} | {owner[f"c{a}"] for _, a, _ in links}
            )
            for kind, number in rules.JOURNEYS.items():
                check(await stored_totals(conn, tenant, kind=number), merged, kind)
                by_month = await stored_totals(conn, tenant, kind=number, grain="m")
                check(by_month, merged, kind)
            ages = age_groups(merged)
            for age in ("18-24", "65+"):
                segment = [e for e in merged if ages.get(e.customer) == age]
                got = await stored_totals(
                    conn, tenant, kind=rules.EPISODE, segment=f"age_group={age}"
                )
                check(got, segment, "episode")
            before = await snapshot(conn, tenant)
        async with db.session() as session:
            await rebuild_from_events(await raw_connection(session), tenant)
        async with db.session() as session:
            assert await snapshot(await raw_connection(session), tenant) == before
    finally:
        await db.dispose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=event_logs(customers=3, max_size=18), links=bridges(3), seed=st.integers(0, 2**32))
def test_the_stored_map_equals_the_plain_recomputation(db, journey_settings, events, links, seed):
    """Random logs (self-loops, ties, gaps, cases, traits) delivered shuffled, in random chunks,
    with replays and merges, the compactor draining in between; then a rebuild from events."""
    rng = random.Random(seed)
    asyncio.run(run_example(journey_settings.dsn, journey_settings, events, links, rng))
