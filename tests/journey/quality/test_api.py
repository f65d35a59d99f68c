"""Journey quality through the real applier, compactor, PostgreSQL and API, on hand-built
journeys with known answers (``known.py``): FCR windows side by side (the billing example), a
repeat found through the identity graph, pain points with where and waits, the health summary,
the map's performance view; the policy's 422s, scopes and tenant isolation; a rebuild from the
events gives the same quality rows."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from services.journey.maps.histogram import bucket, bucket_value_s
from services.journey.maps.rebuild import rebuild_from_events
from shared.db import raw_connection
from tests.journey.maps.support import deliver, envelope
from tests.journey.quality import known
from tests.support import TenantFactory

PERIOD = {"from": "2025-03-03", "to": "2025-03-10"}
LATE = (known.BASE + timedelta(days=200)).isoformat()


@dataclass
class Built:
    tenant: Any
    admin: Any


# a step's key and its quality facts (``rules.QRow``, the segment spread in its five columns)
QUALITY_COLUMNS = (
    "tenant_id, customer_id, step_key, at_us, day, activity, prev_activity, channel, contact, "
    "reason, team, age_group, region, tier, lifecycle_stage, tenure, resolved, transfers, "
    "abandon_at, abandon_wait_ms, queue_wait_ms, sentiment_milli, callback, next_any_us, "
    "next_same_us, reopen_us, episode, episode_end, cross_unresolved"
)


async def quality_rows(db, tenant: str) -> list[tuple[Any, ...]]:
    async with db.session() as session:
        conn = await raw_connection(session)
        rows = await conn.fetch(
            f"""SELECT {QUALITY_COLUMNS} FROM journey.map_step WHERE tenant_id = $1
                ORDER BY customer_id, step_key""",  # noqa: S608 - constants
            tenant,
        )
    return [tuple(r.values()) for r in rows]


@pytest.fixture(scope="module")
async def built(db, journey_settings) -> Built:
    factory = TenantFactory(db)
    tenant = await factory(scopes=["analytics:read"])
    admin_key = await factory.key(tenant, scopes=["admin"])
    items = [envelope(tenant.id, ev, known.BASE, ids) for ev, ids in known.items()]
    random.Random(9).shuffle(items)  # late and out-of-order events, in chunks, replays
    items += items[:3]
    await deliver(db, journey_settings, items, cuts=[4, 9, 15], drain_after={0, 2})
    return Built(tenant, {"Authorization": f"Bearer {admin_key}"})


async def get(client, built: Built, path: str, **params) -> dict[str, Any]:
    r = await client.get(path, params=params, headers=built.tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


def window(group: dict[str, Any], label: str) -> dict[str, Any]:
    return next(w for w in group["windows"] if w["window"] == label)


async def test_the_billing_example_is_resolved_for_7_days_and_not_for_35(journey, built):
    body = await get(journey, built, "/v1/fcr", by="reason", windows="1d,7d,35d", as_of=LATE,
                     **PERIOD)  # fmt: skip
    billing = next(g for g in body["groups"] if g["key"] == "billing")
    assert billing["contacts"] == 1
    assert window(billing, "7d") | {} == {
        "window": "7d", "judged": 1, "resolved": 1, "repeated": 0, "fcr_rate": 1.0,
        "repeat_rate": 0.0, "still_open": 0, "still_open_share": 0.0, "already_repeated": 0,
    }  # fmt: skip
    assert window(billing, "35d")["resolved"] == 0
    assert window(billing, "35d")["repeated"] == 1
    assert window(billing, "policy")["resolved"] == 1  # the default policy: 7 days
    total = body["total"]
    assert total["contacts"] == 6
    # 1d: nobody came back within a day; 7d: bob (2 days, by e-mail); 35d: ann too (30 days)
    assert [window(total, w)["repeated"] for w in ("1d", "7d", "35d")] == [0, 1, 2]
    assert window(total, "7d")["fcr_rate"] == round(5 / 6, 4)
    # declared (contact.ended.resolved) vs observed under the policy window
    vs = total["declared"]["vs_observed"]
    assert total["declared"]["known"] == 4
    assert total["declared"]["resolved"] == 3
    assert (vs["declared_resolved_and_resolved"], vs["declared_resolved_but_repeated"]) == (2, 1)
    assert (vs["declared_unresolved_but_resolved"], vs["declared_unresolved_and_repeated"]) == (
        1,
        0,
    )


async def test_a_policy_override_gives_billing_35_days(journey, built):
    policy = {"default_window": "7d", "overrides": [{"reason": "billing", "window": "35d"}]}
    r = await journey.put("/v1/fcr-policy", json=policy, headers=built.admin)
    assert r.status_code == 200, r.text
    try:
        body = await get(journey, built, "/v1/fcr", by="reason", as_of=LATE, **PERIOD)
        billing = next(g for g in body["groups"] if g["key"] == "billing")
        assert window(billing, "policy")["repeated"] == 1
        vs = billing["declared"]["vs_observed"]
        assert vs["declared_resolved_but_repeated"] == 1  # the agent said resolved; it was not
        got = await get(journey, built, "/v1/fcr-policy")
        assert got["policy"]["overrides"][0]["window"] == "35d"
    finally:
        await journey.put("/v1/fcr-policy", json={}, headers=built.admin)


async def test_windows_not_yet_elapsed_are_still_open(journey, built):
    early = (known.BASE + timedelta(days=10)).isoformat()
    body = await get(journey, built, "/v1/fcr", windows="7d,35d", as_of=early, **PERIOD)
    total = body["total"]
    assert window(total, "7d")["judged"] == 6
    assert window(total, "35d") | {} == {
        "window": "35d", "judged": 0, "resolved": 0, "repeated": 0, "fcr_rate": None,
        "repeat_rate": None, "still_open": 6, "still_open_share": 1.0, "already_repeated": 1,
    }  # fmt: skip
    later = (known.BASE + timedelta(days=31)).isoformat()
    body = await get(journey, built, "/v1/fcr", windows="35d", as_of=later, **PERIOD)
    assert window(body["total"], "35d")["already_repeated"] == 2  # ann's bill came again


async def test_a_repeat_on_another_channel_is_found_through_the_identity_graph(journey, built):
    body = await get(journey, built, "/v1/fcr", by="channel", windows="7d", as_of=LATE, **PERIOD)
    groups = {g["key"]: g for g in body["groups"]}
    assert window(groups["phone"], "7d")["repeated"] == 1  # bob's call, then his e-mail
    assert window(groups["email"], "7d")["repeated"] == 0
    assert groups["email"]["contacts"] == 1
    teams = await get(journey, built, "/v1/fcr", by="agent_team", as_of=LATE, **PERIOD)
    keys = {g["key"]: g["contacts"] for g in teams["groups"]}
    assert keys["retention"] == 1  # dan's call ended with the team it was transferred to
    assert keys["billing-tier2"] == 1


async def test_pain_points_are_ranked_by_impact_with_where_and_waits(journey, built):
    body = await get(journey, built, "/v1/pain-points", as_of=LATE, **PERIOD)
    rows = [(p["kind"], p["key"], p["affected"], p["base"]) for p in body["pain_points"]]
    call = "phone:inbound_call"
    assert rows == [
        ("abandon", call, 1, 5),
        ("repeat_contact", call, 1, 5),
        ("transfer", call, 2, 5),
        ("transfer_chain", call, 1, 5),
        ("negative_sentiment", call, 1, 1),
        ("long_wait", call, 1, 2),
    ]
    abandon, repeat = body["pain_points"][0], body["pain_points"][1]
    assert abandon["impact"] == 1.0
    assert repeat["impact"] == 0.8
    assert abandon["where"] == {"ivr:main_menu": 1}
    assert abandon["mean_wait_s"] == 40.0
    # the previous week: cat's abandoned call in the queue, then a repeat within 7 days
    assert abandon["previous"] == {"affected": 1, "base": 1, "rate": 1.0}
    assert abandon["change"] == {"affected": 0, "rate": -0.8}
    assert repeat["previous"]["affected"] == 1
    long_wait = next(p for p in body["pain_points"] if p["kind"] == "long_wait")
    # the map's log-bucket estimates of 100 s and 600 s (within 4.33 %)
    estimate = [bucket_value_s(bucket(s * 1_000_000)) for s in (100, 600)]
    assert [long_wait["p50_wait_s"], long_wait["p90_wait_s"]] == estimate
    assert abandon["example"]["step_key"] == "i:cat-1"
    assert abandon["example"]["timeline"].endswith("/timeline")
    drill = await get(journey, built, "/v1/pain-points/journeys", kind="repeat_contact",
                      key=call, as_of=LATE, **PERIOD)  # fmt: skip
    assert [i["step_key"] for i in drill["items"]] == ["i:bob-1"]
    by_channel = await get(journey, built, "/v1/pain-points", by="channel", kind="transfer",
                           as_of=LATE, **PERIOD)  # fmt: skip
    assert [(p["key"], p["affected"]) for p in by_channel["pain_points"]] == [("phone", 2)]


async def test_pain_point_drill_down_pages(journey, built):
    first = await get(journey, built, "/v1/pain-points/journeys", kind="transfer",
                      key="phone:inbound_call", limit=1, as_of=LATE, **PERIOD)  # fmt: skip
    assert [i["step_key"] for i in first["items"]] == ["i:eve-1"]
    second = await get(journey, built, "/v1/pain-points/journeys", kind="transfer",
                       key="phone:inbound_call", limit=1, cursor=first["next_cursor"],
                       as_of=LATE, **PERIOD)  # fmt: skip
    assert [i["step_key"] for i in second["items"]] == ["i:dan-1"]
    assert second["next_cursor"] is None


async def test_journey_health_summarises_with_slots_for_experience_and_conformance(journey, built):
    body = await get(journey, built, "/v1/journey-health", as_of=LATE, **PERIOD)
    assert body["previous_period"] == {"from": "2025-02-24", "to": "2025-03-03"}
    assert body["contacts"] == {"value": 6, "previous": 1}
    assert body["fcr"]["value"] == round(5 / 6, 4)
    assert body["fcr"]["previous"] == 0.0  # cat's first call came back
    assert body["abandon_rate"]["value"] == round(1 / 6, 4)
    assert body["top_pain_points"][0]["kind"] == "abandon"
    assert {m["channel"]: m["contacts"] for m in body["channel_mix"]} == {"phone": 5, "email": 1}
    experience = body["experience"]
    assert experience["available"] is True
    # ann's CSAT 5 and eve's 2 this week, cat's 1 the week before
    assert experience["csat"] | {} == {
        "value": 3.5, "previous": 1.0, "change": 2.5, "n": 2, "previous_n": 1,
        "summary": {"n": 2, "mean": 3.5, "satisfied_share": 0.5},
        "previous_summary": {"n": 1, "mean": 1.0, "satisfied_share": 0.0},
    }  # fmt: skip
    # NPS: ann a promoter (9), eve a detractor (3): 0; cat's 0 the week before: -100
    assert (experience["nps"]["value"], experience["nps"]["previous"]) == (0.0, -100.0)
    assert (experience["nps"]["n"], experience["nps"]["previous_n"]) == (2, 1)
    assert experience["nps"]["summary"]["promoters"] == 1
    assert "ces" not in experience  # nobody answered a CES survey
    assert body["conformance"] == {"available": True, "designed_journeys": []}


async def test_journey_health_conformance_slot_reads_the_designed_journeys(journey, built):
    """The conformance slot: per designed journey, the conforming share and mean fitness of the
    period and the previous one, equal to the conformance endpoint's for those ranges."""
    design = {"granularity": "channel", "steps": [{"activity": "phone"}]}
    r = await journey.put("/v1/designed-journeys/calls", json=design, headers=built.admin)
    assert r.status_code == 200, r.text
    body = await get(journey, built, "/v1/journey-health", as_of=LATE, **PERIOD)
    (item,) = body["conformance"]["designed_journeys"]
    assert item["name"] == "calls"
    assert item["available"] is True
    url = "/v1/designed-journeys/calls/conformance"
    for key, period in (("value", PERIOD), ("previous", body["previous_period"])):
        want = await get(journey, built, url, **period)
        assert want["computed_from"] == "counts"
        assert item["journeys"][key] == want["journeys"]
        assert item["conforming_share"][key] == want["conforming_share"]
        assert item["mean_fitness"][key] == want["fitness"]["mean"]
    assert item["journeys"]["value"] > 0
    r = await journey.delete("/v1/designed-journeys/calls", headers=built.admin)
    assert r.status_code == 204


async def test_the_map_performance_view_shows_fcr_per_node(journey, built):
    body = await get(journey, built, "/v1/journey-map", view="performance", granularity="channel",
                     **PERIOD)  # fmt: skip
    nodes = {n["id"]: n for n in body["nodes"]}
    assert nodes["phone"]["fcr"]["contacts"] == 5
    assert nodes["phone"]["fcr"]["repeat_contact_rate"] == 0.2
    assert nodes["email"]["fcr"]["fcr_rate"] == 1.0


@pytest.mark.parametrize(
    "policy",
    [
        {"default_window": "7x"},
        {"default_window": "0d"},
        {"default_window": "500d"},
        {"further_contact": "same_case"},
        {"surprise": 1},
        {"overrides": [{"window": "7d"}]},
        {
            "overrides": [
                {"reason": "billing", "window": "7d"},
                {"reason": "billing", "window": "9d"},
            ]
        },
        {"overrides": [{"segment": {"shoe_size": "44"}, "window": "7d"}]},
    ],
)
async def test_bad_policies_are_422(journey, built, policy):
    r = await journey.put("/v1/fcr-policy", json=policy, headers=built.admin)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/v1/fcr", {"windows": "7x"}, "query.windows"),
        ("/v1/fcr", {"windows": "7d,168h"}, "query.windows"),
        ("/v1/fcr", {"by": "shoe_size"}, "query.by"),
        ("/v1/fcr", {"from": "2025-03-10", "to": "2025-03-03"}, "query.to"),
        ("/v1/pain-points", {"by": "reason"}, "query.by"),
        ("/v1/pain-points", {"kind": "boredom"}, "query.kind"),
        ("/v1/pain-points", {"segment.shoe_size": "44"}, "query.segment.shoe_size"),
        (  # one trait, two values: as the map's parameters (one parser for both)
            "/v1/fcr",
            [("segment.age_group", "25-34"), ("segment.age_group", "35-44")],
            "query.segment.age_group",
        ),
        ("/v1/journey-health", {"bogus": "1"}, "query.bogus"),
        ("/v1/fcr", {"as_of": "9999-12-31T12:00:00Z"}, "query.as_of"),
        ("/v1/pain-points", {"as_of": "0001-01-02T00:00:00Z"}, "query.as_of"),
        ("/v1/journey-health", {"from": "0001-01-05", "to": "0001-01-10"}, "query.from"),
        ("/v1/fcr", {"as_of": "0001-01-01T00:00:00+14:00"}, "query.as_of"),
    ],
)
async def test_bad_parameters_are_422_naming_them(journey, built, path, params, loc):
    r = await journey.get(path, params=params, headers=built.tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


async def test_scopes_and_tenant_isolation(journey, built, db):
    r = await journey.put("/v1/fcr-policy", json={}, headers=built.tenant.headers)
    assert r.status_code == 403
    other = await TenantFactory(db)(scopes=["analytics:read"])
    for path in ("/v1/fcr", "/v1/pain-points", "/v1/journey-health"):
        r = await journey.get(path, params={"as_of": LATE, **PERIOD}, headers=other.headers)
        assert r.status_code == 200
        body = r.json()
        assert body.get("pain_points", []) == []
        assert body.get("top_pain_points", []) == []
        if "total" in body and isinstance(body["total"], dict):
            assert body["total"]["contacts"] == 0
    no_scope = await TenantFactory(db)(scopes=["context:read"])
    r = await journey.get("/v1/fcr", headers=no_scope.headers)
    assert r.status_code == 403


async def test_a_rebuild_from_events_gives_the_same_quality_rows(db, built):
    before = await quality_rows(db, built.tenant.id)
    assert len(before) == 8  # 8 steps: ann 2, bob 2, cat 2, dan 1, eve 1
    async with db.session() as session:
        await rebuild_from_events(await raw_connection(session), built.tenant.id)
    assert await quality_rows(db, built.tenant.id) == before
