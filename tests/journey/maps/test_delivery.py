"""Through Kafka and the journey worker (its map compactor included): out-of-order delivery and
a replay from offset 0 give exactly the in-order map; a merge and its split move steps into one
journey and back; a new step shows within seconds; the simulator's journeys show as edges."""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from prometheus_client import REGISTRY

from services.simulator import generate
from shared.db import Database, raw_connection
from shared.kafka import ensure_topics
from tests.journey.conftest import Worker, cloud_event, journey_settings_for, send
from tests.journey.maps import dataset
from tests.journey.maps.reference import Ev, ref_map
from tests.journey.maps.support import email
from tests.support import eventually


def raw_event(tenant: str, e: Ev, base, customer: str | None = None) -> dict[str, Any]:
    return cloud_event(
        tenant=tenant,
        id=e.id,
        type=e.type,
        time=(base + timedelta(microseconds=e.t)).isoformat(),
        identifiers=[email(tenant, customer or e.customer)],
        **e.data,
    )


async def settled(db: Database, tenant: str, events: int) -> bool:
    """Every event applied and folded into the map."""
    async with db.session() as session:
        conn = await raw_connection(session)
        applied = await conn.fetchval(
            "SELECT count(*) FROM journey.event WHERE tenant_id = $1", tenant
        )
        waiting = await conn.fetchval(
            "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
        )
    return applied == events and waiting == 0


async def semantic_map(conn: asyncpg.Connection, tenant: str) -> dict[str, Any]:
    """The tenant's map without ids that depend on the tenant or arrival order (customer ids,
    segment vector positions)."""
    names = {
        r[1] + 1: r[0]
        for r in await conn.fetch(
            "SELECT segment, idx FROM journey.map_segment WHERE tenant_id = $1", tenant
        )
    }
    names[1] = ""

    def by_segment(vector: list[int]) -> dict[str, int]:
        return {names[i]: v for i, v in enumerate(vector, start=1) if v}

    nodes = {
        (r["kind"], r["grain"], r["period"], r["activity"], r["stat"]): by_segment(r["v"])
        for r in await conn.fetch("SELECT * FROM journey.map_node WHERE tenant_id = $1", tenant)
    }
    edges = {
        (r["kind"], r["grain"], r["period"], r["source"], r["target"], r["bucket"]): (
            by_segment(r["n"]),
            by_segment(r["us"]),
        )
        for r in await conn.fetch("SELECT * FROM journey.map_edge WHERE tenant_id = $1", tenant)
    }
    journeys = sorted(
        (r["kind"], r["journey_key"], r["day"], tuple(r["activities"]), tuple(r["times_us"]))
        for r in await conn.fetch("SELECT * FROM journey.map_journey WHERE tenant_id = $1", tenant)
    )
    return {"nodes": nodes, "edges": edges, "journeys": journeys}


async def test_out_of_order_delivery_and_a_replay_give_the_in_order_map(
    db, producer, settings_overrides, make_tenant
):
    run = uuid.uuid4().hex[:6]
    cfg = journey_settings_for(settings_overrides, topic_normalized=f"maps-order-{run}")
    await ensure_topics(cfg, [cfg.topic_normalized], partitions=4)
    in_order, shuffled = await make_tenant(), await make_tenant()
    base = dataset.base_time()
    events = dataset.events()
    ordered = sorted(events, key=lambda e: (e.t, e.id))
    mixed = list(events)
    random.Random(7).shuffle(mixed)
    # Keyed by customer (as ingest keys them): each customer's events arrive in list order.
    for tenant, order in ((in_order, ordered), (shuffled, mixed)):
        await send(producer, cfg, *[raw_event(tenant.id, e, base) for e in order])
    worker = Worker(cfg)
    try:
        for tenant in (in_order, shuffled):
            await eventually(lambda t=tenant: settled(db, t.id, len(events)), timeout=60)
    finally:
        await worker.stop()
    async with db.session() as session:
        conn = await raw_connection(session)
        first = await semantic_map(conn, in_order.id)
        assert await semantic_map(conn, shuffled.id) == first
    steps = sum(v[""] for k, v in first["nodes"].items() if k[:2] == (1, "d") and k[4] == "count")
    assert steps == ref_map(events).steps

    # Replay the topic from offset 0 (a new consumer group); a sentinel per partition tells
    # when the replay has passed every earlier record.
    replay = Worker(journey_settings_for(settings_overrides, topic_normalized=cfg.topic_normalized))
    sentinel = await make_tenant()
    try:
        for partition in range(4):
            event = cloud_event(tenant=sentinel.id, type="fact.collected", name="n", value=1)
            await producer.send_and_wait(
                cfg.topic_normalized, orjson.dumps(event), partition=partition
            )
        await eventually(lambda: settled(db, sentinel.id, 4), timeout=60)
    finally:
        await replay.stop()
    async with db.session() as session:
        conn = await raw_connection(session)
        assert await semantic_map(conn, in_order.id) == first
        assert await semantic_map(conn, shuffled.id) == first


async def map_of(journey, tenant, **params) -> dict[str, Any]:
    r = await journey.get("/v1/journey-map", params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_merge_and_its_split_move_steps_into_one_journey_and_back(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant()
    base = dataset.base_time()
    call = Ev("x1", "contact.started", 0, {"interaction_id": "x1", "channel": "phone"}, "x")
    chat_data = {"interaction_id": "y1", "channel": "web_chat"}
    chat = Ev("y1", "contact.started", 3600 * 10**6, chat_data, "y")
    started = time.monotonic()
    await send(producer, journey_settings, raw_event(tenant.id, call, base))
    first = await eventually(
        lambda: _when(map_of(journey, tenant), lambda m: m["steps"] == 1), timeout=15
    )
    seconds_to_map = time.monotonic() - started
    assert first["nodes"][0]["id"] == "phone"
    assert seconds_to_map < 10  # a new step shows in the map within seconds
    await send(producer, journey_settings, raw_event(tenant.id, chat, base))
    two = await eventually(
        lambda: _when(map_of(journey, tenant), lambda m: m["steps"] == 2), timeout=15
    )
    assert two["journeys"] == 2
    assert two["edges"] == []

    ids = {}
    for who in ("x", "y"):
        r = await journey.get(
            "/v1/context",
            params={"identifier_type": "email", "value": email(tenant.id, who)["value"]},
            headers=tenant.headers,
        )
        ids[who] = r.json()["customer_id"]
    r = await journey.post(
        "/v1/customers/merge",
        json={"survivor_id": ids["x"], "merged_id": ids["y"], "reason": "same person"},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    merged = await eventually(
        lambda: _when(map_of(journey, tenant), lambda m: m["journeys"] == 1), timeout=15
    )
    assert [(e["source"], e["target"], e["count"]) for e in merged["edges"]] == [
        ("phone", "web_chat", 1)
    ]
    assert merged["edges"][0]["duration_s"]["mean"] == 3600.0
    r = await journey.post(f"/v1/customers/{ids['x']}/split", json={}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    split = await eventually(
        lambda: _when(map_of(journey, tenant), lambda m: m["journeys"] == 2), timeout=15
    )
    assert split["edges"] == []
    assert split["steps"] == 2
    lag = REGISTRY.get_sample_value("waypoint_journey_map_lag_seconds")
    assert lag is not None
    rederived = REGISTRY.get_sample_value(
        "waypoint_journey_map_customers_total", {"path": "rederived"}
    )
    assert (rederived or 0) >= 2


async def _when(coro, check):
    value = await coro
    return value if check(value) else None


async def test_the_simulators_journeys_show_as_the_expected_edges(
    journey, journey_worker, producer, journey_settings, make_tenant, db
):
    tenant = await make_tenant()
    events = list(generate(customers=60, seed=21, tenant=tenant.id, days=20))
    await send(producer, journey_settings, *events)
    await eventually(lambda: settled(db, tenant.id, len(events)), timeout=120, interval=0.5)
    body = await map_of(journey, tenant, view="performance")
    edges = {(e["source"], e["target"]): e["count"] for e in body["edges"]}
    assert edges[("social:social_mention", "web_chat:web_chat")] > 0
    assert edges[("web_chat:web_chat", "phone:inbound_call")] > 0
    assert edges[("phone:inbound_call", "phone:inbound_call")] > 0  # calling again
    nodes = {n["id"]: n for n in body["nodes"]}
    phone = nodes["phone:inbound_call"]
    assert phone["abandoned_in"].get("ivr", 0) > 0
    assert phone["abandoned_in"].get("queue", 0) > 0
    assert phone["transfers"] > 0
    assert nodes["web:checkout"]["count"] > 0
    switches = (
        await journey.get("/v1/journey-map/channel-switches", headers=tenant.headers)
    ).json()
    matrix = defaultdict(dict, switches["matrix"])
    assert matrix["social"].get("web_chat", 0) > 0
    assert matrix["web_chat"].get("phone", 0) > 0
    mix = (
        await journey.get(
            "/v1/segments/channel-mix", params={"by": "age_group"}, headers=tenant.headers
        )
    ).json()
    assert {s["value"] for s in mix["segments"]} >= {"18-24", "65+"}
