"""The maintained conformance counts equal the computation from the journeys: after random logs
delivered shuffled in chunks with replays and late events, the compactor draining in between;
after merges and splits; after a design version change; after ``rebuild-maps``; and reads that
the counts cannot answer say they were computed from the journeys."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest

from services.journey.conformance import counts, service
from services.journey.conformance import repository as repo
from services.journey.maps import maintain
from services.journey.maps.rebuild import rebuild_from_events
from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import config_of
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE, MIN, D, H, Log
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import deliver, email, envelope
from tests.support import TenantFactory

NAMES = ["phone:ivr", "phone:agent", "web_chat:chat", "email:followup", "web:checkout"]
TIMED = {
    "journey": "episode",
    "steps": [
        {"activity": "phone:ivr"},
        {"activity": "web_chat:chat", "optional": True, "max_wait_s": 1800},
        {"activity": "phone:agent", "max_wait_s": 3600},
        {"activity": "email:followup"},
    ],
}
CHANNELS = {
    "granularity": "channel",
    "journey": "customer",
    "scope": "all",
    "steps": [{"activity": "phone"}, {"activity": "email"}],
}
QUERIES: list[tuple[dict[str, Any], str | None]] = [
    ({}, None),
    ({"start": date(2025, 3, 4), "end": date(2025, 3, 9)}, None),
    ({"start": date(2025, 3, 1), "end": date(2025, 5, 1)}, "region"),  # whole months + days
    ({"segment": {"region": "emea"}}, None),
    ({"segment": {"tier": "gold"}, "end": date(2025, 3, 6)}, None),
    ({}, "tier"),
    ({"segment": {"region": "nowhere"}}, None),
]


def random_log(rng: random.Random, customers: int, prefix: str = "r") -> Log:
    log = Log()
    for n in range(customers):
        c = f"{prefix}{n}"
        traits = {"region": rng.choice(["emea", "na"])}
        if rng.random() < 0.7:
            traits["tier"] = rng.choice(["gold", "basic"])
        log.traits(c, **traits)
        t = rng.randint(0, 20) * D + rng.randint(0, 23) * H
        for _ in range(rng.randint(1, 7)):
            t += rng.choice([10 * MIN, 40 * MIN, 2 * H, 9 * D])
            log.step(c, t, rng.choice(NAMES))
    return log


async def send(
    db: Database, settings: Any, tenant: str, events: list[Ev], rng: random.Random
) -> None:
    """Shuffled, with replays, in random chunks, the compactor draining between some."""
    items = [envelope(tenant, e, BASE, [email(tenant, e.customer)]) for e in events]
    rng.shuffle(items)
    items += rng.sample(items, k=min(len(items), 3))
    cuts = [rng.randint(0, len(items)) for _ in range(4)]
    await deliver(db, settings, items, cuts=cuts, drain_after={0, 2})


def _figures(body: dict[str, Any]) -> dict[str, Any]:
    keep = ("journeys", "conforming", "conforming_share", "fitness")
    out = {k: body[k] for k in keep}
    out["deviations"] = [{**d, "examples": None} for d in body["deviations"]]
    return out


async def assert_exact(db: Database, tenant: str, name: str) -> None:
    """Every query of QUERIES: the counts' answer equals the computation from the journeys."""
    async with db.session() as session:
        conn = await raw_connection(session)
        design = await repo.get(conn, tenant, name)
        assert design is not None
        config = await config_of(conn, tenant)
        judge = counts.Judge(design, config)
        kind = design.definition.journey.value
        for params, by in QUERIES:
            q = MapQuery(design.definition.granularity.value, kind, **params)
            got = await service.conformance(conn, tenant, design, config, q, by=by, limit=100)
            assert got["computed_from"] == "counts", (params, by)
            whole, groups, out = await service.computed(conn, tenant, judge, q, by)
            assert got["out_of_scope"] == out, (params, by)
            assert _figures(got) == _figures(whole.body(100)), (params, by)
            if by is not None:
                want = {v: _figures(groups[v].body(100)) for v in groups}
                assert {g["value"]: _figures(g) for g in got["by_segment"]} == want


async def put(journey: Any, tenant: Any, name: str, design: dict[str, Any]) -> dict[str, Any]:
    r = await journey.put(f"/v1/designed-journeys/{name}", json=design, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_equal_the_computation_after_random_logs_and_late_events(
    db, journey_settings, journey, seed
):
    """Designs saved before any journey (kept by the compactor only) and after some (recounted
    in the PUT, then kept); events shuffled, so many arrive late."""
    rng = random.Random(seed)
    tenant = await TenantFactory(db)()
    await put(journey, tenant, "timed", TIMED)
    first, second = random_log(rng, 25), random_log(rng, 25, prefix="s")
    await send(db, journey_settings, tenant.id, first.events, rng)
    await put(journey, tenant, "channels", CHANNELS)
    late = Log()
    late._n = 10_000
    for n in range(10):  # steps in between earlier ones, arriving last
        late.step(f"r{n}", rng.randint(0, 20) * D + 5 * MIN, rng.choice(NAMES))
    await send(db, journey_settings, tenant.id, second.events + late.events, rng)
    await assert_exact(db, tenant.id, "timed")
    await assert_exact(db, tenant.id, "channels")


async def _customer_id(journey: Any, tenant: Any, who: str) -> str:
    r = await journey.get(
        "/v1/context",
        params={"identifier_type": "email", "value": email(tenant.id, who)["value"]},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["customer_id"])


async def test_counts_follow_merges_splits_version_changes_and_rebuilds(
    db, journey_settings, journey
):
    rng = random.Random(11)
    tenant = await TenantFactory(db)()
    await put(journey, tenant, "timed", TIMED)
    await send(db, journey_settings, tenant.id, random_log(rng, 20).events, rng)
    await assert_exact(db, tenant.id, "timed")
    ids = {c: await _customer_id(journey, tenant, c) for c in ("r0", "r1", "r2")}
    for merged in ("r1", "r2"):
        r = await journey.post(
            "/v1/customers/merge",
            json={"survivor_id": ids["r0"], "merged_id": ids[merged], "reason": "same person"},
            headers=tenant.headers,
        )
        assert r.status_code == 200, r.text
    await maintain.drain(db)
    await assert_exact(db, tenant.id, "timed")
    r = await journey.post(f"/v1/customers/{ids['r0']}/split", json={}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    await maintain.drain(db)
    await assert_exact(db, tenant.id, "timed")

    # A new version: recounted in the PUT; the old version's figures are gone.
    before = await service_body(db, tenant.id, "timed")
    changed = {**TIMED, "steps": [*TIMED["steps"][:2], TIMED["steps"][3]]}
    assert (await put(journey, tenant, "timed", changed))["version"] == 2
    await assert_exact(db, tenant.id, "timed")
    assert await service_body(db, tenant.id, "timed") != before
    # The same body again keeps the version and the counts.
    assert (await put(journey, tenant, "timed", changed))["version"] == 2
    await assert_exact(db, tenant.id, "timed")

    # rebuild-maps: counts cleared and re-added by the rebuild's own journey writes.
    async with db.session() as session:
        conn = await raw_connection(session)
        rows_before = await conn.fetch(
            """SELECT grain, period, stat, v FROM journey.conformance_day
               WHERE tenant_id = $1 ORDER BY 1, 2, 3""",
            tenant.id,
        )
        await conn.execute("DELETE FROM journey.conformance_state WHERE tenant_id = $1", tenant.id)
    async with db.session() as session:
        await rebuild_from_events(await raw_connection(session), tenant.id)
    async with db.session() as session:
        conn = await raw_connection(session)
        rows_after = await conn.fetch(
            """SELECT grain, period, stat, v FROM journey.conformance_day
               WHERE tenant_id = $1 ORDER BY 1, 2, 3""",
            tenant.id,
        )
    assert normal(rows_after) == normal(rows_before)
    await assert_exact(db, tenant.id, "timed")


def normal(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows with their vectors' trailing zeros dropped (a vector's length is not a count)."""
    out = []
    for grain, period, stat, v in rows:
        v = list(v)
        while v and v[-1] == 0:
            v.pop()
        out.append((grain, period, stat, v))
    return out


async def service_body(db: Database, tenant: str, name: str) -> dict[str, Any]:
    async with db.session() as session:
        conn = await raw_connection(session)
        design = await repo.get(conn, tenant, name)
        assert design is not None
        config = await config_of(conn, tenant)
        q = MapQuery(journey=design.definition.journey.value)
        return _figures(
            await service.conformance(conn, tenant, design, config, q, by=None, limit=9)
        )


async def test_reads_the_counts_cannot_answer_are_computed_from_the_journeys(
    db, journey_settings, journey
):
    rng = random.Random(4)
    tenant = await TenantFactory(db)()
    await send(db, journey_settings, tenant.id, random_log(rng, 10).events, rng)
    await put(journey, tenant, "timed", TIMED)
    url = "/v1/designed-journeys/timed/conformance"
    cases = [
        ({}, "counts"),
        ({"segment.region": "emea", "segment.tier": "gold"}, "journeys"),
        ({"segment.region": "emea", "by": "tier"}, "journeys"),
        ({"journey": "customer"}, "journeys"),
    ]
    for params, source in cases:
        r = await journey.get(url, params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        assert r.json()["computed_from"] == source, params
    # A design without counts (saved before they existed) is computed, not served stale.
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute("DELETE FROM journey.conformance_state WHERE tenant_id = $1", tenant.id)
    r = await journey.get(url, headers=tenant.headers)
    assert r.json()["computed_from"] == "journeys"
    assert r.json()["journeys"] > 0


async def test_a_stage_design_is_not_served_from_counts_made_under_another_stage_mapping(
    db, journey_settings, journey
):
    """Stage designs depend on the tenant's stage mapping: after it changes (no journey is
    recomputed) the read computes from the journeys and the health slot says the counts are not
    current; saving the design again counts it under the new mapping."""
    rng = random.Random(8)
    tenant = await TenantFactory(db)()
    await send(db, journey_settings, tenant.id, random_log(rng, 12).events, rng)
    design = {"granularity": "stage", "scope": "all", "steps": [{"activity": "support"}]}
    await put(journey, tenant, "stages", design)
    url = "/v1/designed-journeys/stages/conformance"
    before = (await journey.get(url, headers=tenant.headers)).json()
    assert before["computed_from"] == "counts"
    r = await journey.put(
        "/v1/journey-map/config",
        json={"stages": {"phone": "onboarding"}},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    after = (await journey.get(url, headers=tenant.headers)).json()
    assert after["computed_from"] == "journeys"
    assert after["conforming"] != before["conforming"]  # phone steps are no longer `support`
    health = await journey.get(
        "/v1/journey-health",
        params={"from": "2025-03-01", "to": "2025-04-01", "as_of": "2025-09-01T00:00:00Z"},
        headers=tenant.headers,
    )
    assert health.status_code == 200, health.text
    (item,) = health.json()["conformance"]["designed_journeys"]
    assert item["available"] is False
    await put(journey, tenant, "stages", design)  # same body: same version, counted again
    await assert_exact(db, tenant.id, "stages")
