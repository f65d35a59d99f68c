"""The journey map API on a known log: every view and endpoint with its filters, equal to a
plain recomputation; 422s naming the parameter; scopes; tenant isolation."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from services.journey.maps import activities, histogram
from tests.journey.maps import dataset
from tests.journey.maps.reference import Ev, nearest_rank, ref_map
from tests.journey.maps.support import deliver, email, envelope
from tests.support import TenantFactory


@dataclass
class Mapped:
    tenant: Any
    events: list[Ev]
    base: object


@pytest.fixture(scope="module")
async def mapped(db, journey_settings) -> Mapped:
    tenant = await TenantFactory(db)(scopes=["analytics:read"])
    base = dataset.base_time()
    events = dataset.events()
    items = [envelope(tenant.id, e, base, [email(tenant.id, e.customer)]) for e in events]
    await deliver(db, journey_settings, items, cuts=[7, 20, 33])
    return Mapped(tenant, events, base)


async def get(client, mapped: Mapped, path: str, **params):
    r = await client.get(path, params=params, headers=mapped.tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


def mapped_ref(events: list[Ev], granularity: str, journey: str = "episode"):
    f = activities.mapper(granularity, {})
    evs = []
    for e in events:
        evs.append(e)
    ref = ref_map(evs, journey)
    nodes, starts, ends, edges, durations = Counter(), Counter(), Counter(), Counter(), {}
    for a, n in ref.nodes.items():
        nodes[f(a)] += n
    for a, n in ref.starts.items():
        starts[f(a)] += n
    for a, n in ref.ends.items():
        ends[f(a)] += n
    for (a, b), n in ref.edges.items():
        edges[(f(a), f(b))] += n
        durations.setdefault((f(a), f(b)), []).extend(ref.durations[(a, b)])
    return ref, nodes, starts, ends, edges, durations


def check_map(body, events, granularity="touchpoint", journey="episode"):
    ref, nodes, starts, ends, edges, durations = mapped_ref(events, granularity, journey)
    assert body["journeys"] == ref.journeys
    assert body["steps"] == ref.steps
    assert {n["id"]: n["count"] for n in body["nodes"]} == dict(nodes)
    assert {n["id"]: n["starts"] for n in body["nodes"] if n["starts"]} == dict(starts)
    assert {n["id"]: n["ends"] for n in body["nodes"] if n["ends"]} == dict(ends)
    assert {(e["source"], e["target"]): e["count"] for e in body["edges"]} == dict(edges)
    for e in body["edges"]:
        values = durations[(e["source"], e["target"])]
        assert e["duration_s"]["mean"] == pytest.approx(sum(values) / len(values) / 1e6, abs=1e-3)
        exact = nearest_rank(values, 0.5) / 1e6
        assert abs(e["duration_s"]["p50"] - exact) <= histogram.RELATIVE_ERROR * exact + 1e-3


@pytest.mark.parametrize("granularity", ["touchpoint", "channel", "stage"])
@pytest.mark.parametrize("journey_kind", ["episode", "customer", "case"])
async def test_the_map_at_every_granularity_and_journey_definition(
    journey, mapped, granularity, journey_kind
):
    body = await get(
        journey, mapped, "/v1/journey-map", granularity=granularity, journey=journey_kind
    )
    check_map(body, mapped.events, granularity, journey_kind)


async def test_the_touchpoint_map_shows_the_hand_offs_repeats_and_the_tie_order(journey, mapped):
    body = await get(journey, mapped, "/v1/journey-map")
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    assert edges[("social:social_mention", "web_chat:web_chat")]["count"] == 1
    assert edges[("web_chat:web_chat", "phone:inbound_call")]["count"] == 2
    assert edges[("phone:inbound_call", "phone:inbound_call")]["count"] == 2  # repeats
    # D's tie at the same instant: purchase (D-40) before campaign (D-41), by event id.
    assert ("web:checkout", "email:campaign_spring") in edges
    # A's call → chat hand-off took exactly one hour.
    assert edges[("phone:inbound_call", "web_chat:web_chat")]["duration_s"]["mean"] == 3600.0


async def test_from_and_to_select_journeys_by_the_day_of_their_first_step(journey, mapped):
    day = mapped.base.date()  # A's first episode starts on day 0, its second on day 12
    body = await get(
        journey, mapped, "/v1/journey-map", **{"from": str(day), "to": str(day + timedelta(1))}
    )
    in_range = [e for e in mapped.events if e.customer == "A" and e.t < 5 * dataset.D * 10**6]
    check_map(body, in_range)
    later = await get(journey, mapped, "/v1/journey-map", **{"from": str(day + timedelta(12))})
    assert {n["id"] for n in later["nodes"]} == {"web:checkout", "customer.churned"}
    assert later["journeys"] == 2


@pytest.mark.parametrize(
    ("filters", "customers"),
    [
        ({"segment.age_group": "18-24"}, {"A", "C"}),
        ({"segment.region": "na"}, {"B", "C"}),
        ({"segment.age_group": "18-24", "segment.region": "na"}, {"C"}),
        ({"segment.tier": "platinum"}, set()),
    ],
)
async def test_segment_filters(journey, mapped, filters, customers):
    body = await get(journey, mapped, "/v1/journey-map", **filters)
    check_map(body, [e for e in mapped.events if e.customer in customers])


async def test_every_journey_here_is_in_the_first_tenure_band(journey, mapped):
    recent = await get(journey, mapped, "/v1/journey-map", **{"segment.tenure": "0-30d"})
    body = await get(journey, mapped, "/v1/journey-map")
    assert recent["journeys"] == body["journeys"] == ref_map(mapped.events).journeys


async def test_strategic_view_is_by_stage_in_stage_order(journey, mapped):
    body = await get(journey, mapped, "/v1/journey-map", view="strategic")
    assert body["granularity"] == "stage"
    ids = [n["id"] for n in body["nodes"]]
    assert ids == ["awareness", "purchase", "support", "exit"]
    check_map(body, mapped.events, "stage")


async def test_tactical_view_of_the_phone_touchpoint(journey, mapped):
    body = await get(
        journey, mapped, "/v1/journey-map", view="tactical", focus="phone:inbound_call"
    )
    focus = body["focus"]
    assert focus["count"] == 6
    subs = focus["sub_steps"]
    assert {s["name"]: s["steps"] for s in subs["ivr"]} == {"main": 2}
    assert {s["name"]: s["steps"] for s in subs["queue"]} == {"billing_q": 2}
    assert {s["name"] for s in subs["team"]} == {"t1", "t2"}
    assert all("phone:inbound_call" in (e["source"], e["target"]) for e in body["edges"])
    assert {e["source"] for e in body["edges"]} >= {"web_chat:web_chat", "phone:inbound_call"}


async def test_performance_view_per_step(journey, mapped):
    body = await get(journey, mapped, "/v1/journey-map", view="performance")
    phone = next(n for n in body["nodes"] if n["id"] == "phone:inbound_call")
    assert phone["transfers"] == 1
    assert phone["abandons"] == 2
    assert phone["abandoned_in"] == {"ivr": 1, "queue": 1}
    assert phone["mean_abandon_wait_s"] == pytest.approx(215.0)
    assert phone["repeats"] == 2
    assert phone["exit_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert phone["resolved_rate"] == pytest.approx(3 / 4)
    assert phone["department"] == "billing"
    assert phone["mean_queue_wait_s"] == pytest.approx(60.0)
    assert phone["median_to_next_s"] is not None


async def test_variants_with_counts_shares_and_paging(journey, mapped):
    ref = ref_map(mapped.events, "episode")
    first = await get(journey, mapped, "/v1/journey-map/variants", limit=4)
    rest = await get(
        journey, mapped, "/v1/journey-map/variants", limit=4, cursor=first["next_cursor"]
    )
    assert rest["next_cursor"] is None
    got = {tuple(v["path"]): v["count"] for v in first["variants"] + rest["variants"]}
    assert got == dict(ref.variants)
    assert first["journeys"] == ref.journeys
    assert sum(v["share"] for v in first["variants"] + rest["variants"]) == pytest.approx(
        1, abs=1e-3
    )
    channels = await get(journey, mapped, "/v1/journey-map/variants", granularity="channel")
    assert channels["variants"][0]["count"] == 1
    assert channels["journeys"] == ref.journeys


async def test_channel_switches_matrix(journey, mapped):
    body = await get(journey, mapped, "/v1/journey-map/channel-switches")
    _, _, _, _, edges, durations = mapped_ref(mapped.events, "channel")
    expected = {k: n for k, n in edges.items() if k[0] != k[1]}
    assert {(s["source"], s["target"]): s["count"] for s in body["switches"]} == expected
    assert body["matrix"]["web_chat"]["phone"] == 2
    social = next(s for s in body["switches"] if s["source"] == "social")
    assert social["duration_s"]["mean"] == 3600.0


async def test_channel_mix_by_age_group(journey, mapped):
    body = await get(journey, mapped, "/v1/segments/channel-mix", by="age_group")
    by_value = {s["value"]: s for s in body["segments"]}
    assert set(by_value) == {"18-24", "65+"}
    young = {c["channel"]: c["steps"] for c in by_value["18-24"]["channels"]}
    assert young == {"phone": 2, "web_chat": 1, "web": 2, "email": 1, "customer.churned": 1}
    assert sum(c["share"] for c in by_value["65+"]["channels"]) == pytest.approx(1, abs=1e-3)


async def test_drill_down_from_an_edge_to_the_customers_with_paging(journey, mapped):
    first = await get(
        journey, mapped, "/v1/journey-map/journeys", edge="web_chat:web_chat>phone:inbound_call",
        limit=1,
    )  # fmt: skip
    assert len(first["items"]) == 1
    assert first["next_cursor"]
    rest = await get(
        journey, mapped, "/v1/journey-map/journeys", edge="web_chat:web_chat>phone:inbound_call",
        cursor=first["next_cursor"],
    )  # fmt: skip
    items = first["items"] + rest["items"]
    assert len(items) == 2
    assert {i["segment"]["age_group"] for i in items} == {"18-24", "65+"}
    timeline = await journey.get(items[0]["timeline"], headers=mapped.tenant.headers)
    # The drill-down key reads maps only; the timeline link works with a context:read key.
    assert timeline.status_code == 403
    by_node = await get(journey, mapped, "/v1/journey-map/journeys", node="customer.churned")
    assert [i["path"] for i in by_node["items"]] == [["customer.churned"]]
    by_variant = await get(
        journey, mapped, "/v1/journey-map/journeys", variant="phone>phone>web>email",
        granularity="channel",
    )  # fmt: skip
    assert len(by_variant["items"]) == 1


async def test_export_csv_is_the_step_log(journey, mapped):
    r = await journey.get(
        "/v1/journey-map/export", params={"format": "csv"}, headers=mapped.tenant.headers
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    ref = ref_map(mapped.events, "episode")
    assert len(rows) == ref.steps
    assert len({row["case_id"] for row in rows}) == ref.journeys
    assert Counter(row["activity"] for row in rows) == ref.nodes
    young = {row["case_id"] for row in rows if row["age_group"] == "18-24"}
    assert len(young) == 4  # A's two episodes, C's two


async def test_export_xes_follows_ieee_1849(journey, mapped):
    r = await journey.get(
        "/v1/journey-map/export",
        params={"format": "xes", "granularity": "channel"},
        headers=mapped.tenant.headers,
    )
    assert r.status_code == 200
    ns = {"x": "http://www.xes-standard.org/"}
    log = ET.fromstring(r.content)
    assert log.tag == "{http://www.xes-standard.org/}log"
    assert log.get("xes.version") == "1849-2016"
    prefixes = {e.get("prefix") for e in log.findall("x:extension", ns)}
    assert {"concept", "time"} <= prefixes
    traces = log.findall("x:trace", ns)
    ref = ref_map(mapped.events, "episode")
    assert len(traces) == ref.journeys
    events = [e for t in traces for e in t.findall("x:event", ns)]
    assert len(events) == ref.steps
    for event in events:
        keys = {a.get("key") for a in event}
        assert {"concept:name", "time:timestamp"} <= keys
    stamps = [
        [e.find("x:date[@key='time:timestamp']", ns).get("value") for e in t.findall("x:event", ns)]
        for t in traces
    ]
    assert all(s == sorted(s) for s in stamps)


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/journey-map", {"granularity": "planet"}, "granularity"),
        ("/v1/journey-map", {"journey": "trip"}, "journey"),
        ("/v1/journey-map", {"from": "yesterday"}, "from"),
        ("/v1/journey-map", {"from": "2026-03-01", "to": "2026-02-01"}, "to"),
        ("/v1/journey-map", {"segment.shoe_size": "42"}, "segment.shoe_size"),
        ("/v1/journey-map", {"colour": "blue"}, "colour"),
        ("/v1/journey-map", {"view": "satellite"}, "view"),
        ("/v1/journey-map", {"view": "tactical"}, "focus"),
        ("/v1/journey-map", {"view": "tactical", "focus": "nowhere"}, "focus"),
        ("/v1/journey-map", {"view": "strategic", "granularity": "channel"}, "granularity"),
        ("/v1/journey-map/journeys", {"edge": "a>b>c"}, "edge"),
        ("/v1/journey-map/journeys", {}, "edge"),
        ("/v1/segments/channel-mix", {"by": "shoe_size"}, "by"),
        ("/v1/journey-map/export", {"format": "pdf"}, "format"),
        ("/v1/journey-map/variants", {"limit": "0"}, "limit"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(journey, mapped, path, params, param):
    r = await journey.get(path, params=params, headers=mapped.tenant.headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    assert any(d["loc"] == f"query.{param}" for d in body["detail"]), body


async def test_scopes_and_tenant_isolation(journey, mapped, make_tenant):
    other = await make_tenant(scopes=["analytics:read"])
    body = (await journey.get("/v1/journey-map", headers=other.headers)).json()
    assert body["journeys"] == 0
    assert body["nodes"] == []
    assert body["edges"] == []
    drill = await journey.get(
        "/v1/journey-map/journeys", params={"node": "web:checkout"}, headers=other.headers
    )
    assert drill.json()["items"] == []
    context_only = await make_tenant(scopes=["context:read"])
    assert (await journey.get("/v1/journey-map", headers=context_only.headers)).status_code == 403


async def test_admin_implies_analytics_read(journey, mapped, db):
    key = await TenantFactory(db).key(mapped.tenant, scopes=["admin"])
    r = await journey.get("/v1/journey-map", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json()["journeys"] == ref_map(mapped.events).journeys
