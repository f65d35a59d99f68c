"""The map configuration: validated; a stage mapping applies at once without recomputation; a
new episode window or tenure bands recompute the tenant's map to what a rebuild gives."""

from __future__ import annotations

import pytest

from services.journey.maps import activities
from services.journey.maps.rebuild import rebuild_from_events
from shared.db import raw_connection
from tests.journey.maps import dataset
from tests.journey.maps.reference import ref_map
from tests.journey.maps.support import deliver, email, envelope, snapshot


@pytest.fixture
async def configured(db, journey_settings, make_tenant):
    tenant = await make_tenant(scopes=["analytics:read", "admin"])
    base = dataset.base_time()
    events = dataset.events()
    items = [envelope(tenant.id, e, base, [email(tenant.id, e.customer)]) for e in events]
    await deliver(db, journey_settings, items)
    return tenant, events


async def test_defaults_and_validation(journey, configured, make_tenant):
    tenant, _ = configured
    r = await journey.get("/v1/journey-map/config", headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["config"] == {
        "stages": {},
        "stage_order": list(activities.STAGES),
        "episode_window_hours": 168.0,
        "tenure_bands_days": [30, 90, 365],
    }
    for bad in (
        {"episode_window_hours": 0},
        {"tenure_bands_days": [90, 30]},
        {"stages": {"phone": "Not A Stage!"}},
        {"stage_order": ["exit", "exit"]},
        {"surprise": 1},
    ):
        r = await journey.put("/v1/journey-map/config", json=bad, headers=tenant.headers)
        assert r.status_code == 422, bad
    reader = await make_tenant(scopes=["analytics:read"])
    r = await journey.put("/v1/journey-map/config", json={}, headers=reader.headers)
    assert r.status_code == 403


async def test_a_stage_mapping_applies_without_recomputation(journey, configured):
    tenant, _ = configured
    body = {"stages": {"phone:inbound_call": "onboarding", "social": "awareness"}}
    r = await journey.put("/v1/journey-map/config", json=body, headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["recomputed"] is False
    strategic = (
        await journey.get("/v1/journey-map", params={"view": "strategic"}, headers=tenant.headers)
    ).json()
    ids = [n["id"] for n in strategic["nodes"]]
    assert ids == ["awareness", "purchase", "onboarding", "support", "exit"]
    counts = {n["id"]: n["count"] for n in strategic["nodes"]}
    assert counts["onboarding"] == 6  # every phone step
    assert counts["awareness"] == 3  # two campaigns and the social mention


async def test_a_new_window_and_bands_recompute_to_what_a_rebuild_gives(journey, configured, db):
    tenant, events = configured
    body = {"episode_window_hours": 12, "tenure_bands_days": [10, 30]}
    r = await journey.put("/v1/journey-map/config", json=body, headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["recomputed"] is True
    got = (await journey.get("/v1/journey-map", headers=tenant.headers)).json()
    ref = ref_map(events, "episode", window_us=12 * 3600 * 10**6)
    assert got["journeys"] == ref.journeys
    assert {(e["source"], e["target"]): e["count"] for e in got["edges"]} == dict(ref.edges)
    late = await journey.get(
        "/v1/journey-map", params={"segment.tenure": "10-30d"}, headers=tenant.headers
    )
    # A's purchase (day 12, first seen day 0) and C's churn (day 15, first seen day 5).
    assert {n["id"] for n in late.json()["nodes"]} == {"web:checkout", "customer.churned"}
    async with db.session() as session:
        conn = await raw_connection(session)
        recomputed = await snapshot(conn, tenant.id)
    async with db.session() as session:
        await rebuild_from_events(await raw_connection(session), tenant.id)
    async with db.session() as session:
        assert await snapshot(await raw_connection(session), tenant.id) == recomputed
