"""Designed journeys through the API: conformance on hand-built journeys (fitness, conforming
share, deviations with drill-down, by segment), exact after a late event, versions, 422s for bad
designs and parameters, scopes, tenant isolation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.journey.conformance import rules
from services.journey.conformance.rules import judge
from services.journey.conformance.schemas import DesignedJourney
from tests.journey.conformance.support import MIN, H, Log, load
from tests.support import TenantFactory

DESIGN = {
    "description": "IVR, then an agent within the hour, then the follow-up e-mail",
    "steps": [
        {"activity": "phone:ivr"},
        {"activity": "phone:agent", "max_wait_s": 3600},
        {"activity": "email:followup"},
    ],
}
RANGE = {"from": "2025-03-03", "to": "2025-03-04"}


def known_log() -> Log:
    log = Log()
    for c, region in (("c1", "emea"), ("c2", "emea"), ("c3", "na"), ("c4", "na"), ("c5", "na")):
        log.traits(c, region=region)
    # c1 as designed
    for t, a in ((0, "phone:ivr"), (10 * MIN, "phone:agent"), (H, "email:followup")):
        log.step("c1", t, a)
    # c2: a chat inserted between the IVR and the agent
    for t, a in ((0, "phone:ivr"), (5 * MIN, "web_chat:chat"), (20 * MIN, "phone:agent"),
                 (H, "email:followup")):  # fmt: skip
        log.step("c2", t, a)
    # c3: no agent (skipped)
    log.step("c3", 0, "phone:ivr")
    log.step("c3", 2 * H, "email:followup")
    # c4: the agent three hours after the IVR (too slow)
    for t, a in ((0, "phone:ivr"), (3 * H, "phone:agent"), (4 * H, "email:followup")):
        log.step("c4", t, a)
    # c5 never touches the design: out of scope
    log.step("c5", 0, "web:checkout")
    return log


@pytest.fixture(scope="module")
async def tenant(db, journey_settings, journey):
    tenant = await TenantFactory(db)()
    await load(db, journey_settings, tenant.id, known_log().events)
    r = await journey.put("/v1/designed-journeys/care", json=DESIGN, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    return tenant


async def conformance(journey, tenant, name="care", **params):
    r = await journey.get(
        f"/v1/designed-journeys/{name}/conformance",
        params={**RANGE, **params},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_fitness_conforming_share_and_deviations(journey, tenant):
    body = await conformance(journey, tenant)
    assert body["journeys"] == 4
    assert body["out_of_scope"] == 1
    assert body["conforming"] == 1
    assert body["conforming_share"] == 0.25
    # c1: 1; c2: 2·3/(4+3); c3: 2·2/(2+3); c4: 1 (but too slow)
    assert body["fitness"]["mean"] == pytest.approx((1 + 6 / 7 + 0.8 + 1) / 4, abs=1e-4)
    assert body["fitness"]["min"] == 0.8
    assert body["fitness"]["histogram"] == {"0.8-0.9": 2, "0.9-1.0": 2}
    deviations = {(d["kind"], d["step"]): d for d in body["deviations"]}
    assert set(deviations) == {
        ("inserted", "web_chat:chat"),
        ("skipped", "phone:agent"),
        ("too_slow", "phone:agent"),
    }
    for d in deviations.values():
        assert d["journeys"] == 1
        assert d["share"] == 0.25
        assert len(d["examples"]) == 1
    example = deviations[("skipped", "phone:agent")]["examples"][0]
    assert example["path"] == ["phone:ivr", "email:followup"]
    assert example["fitness"] == 0.8
    assert example["timeline"].startswith("/v1/customers/")
    assert body["formula"].startswith("fitness = 2·LCS")


async def test_by_segment(journey, tenant):
    body = await conformance(journey, tenant, by="region")
    groups = {g["value"]: g for g in body["by_segment"]}
    assert groups["emea"]["journeys"] == 2
    assert groups["emea"]["conforming"] == 1
    assert groups["na"]["journeys"] == 2
    assert groups["na"]["conforming"] == 0
    assert {(d["kind"], d["step"]) for d in groups["na"]["deviations"]} == {
        ("skipped", "phone:agent"),
        ("too_slow", "phone:agent"),
    }
    only = await conformance(journey, tenant, **{"segment.region": "emea"})
    assert only["journeys"] == 2
    assert only["conforming"] == 1


async def test_drill_down_to_the_journeys_behind_a_deviation(journey, tenant):
    r = await journey.get(
        "/v1/designed-journeys/care/conformance/journeys",
        params={**RANGE, "deviation": "too_slow:phone:agent"},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["path"] == ["phone:ivr", "phone:agent", "email:followup"]
    assert item["deviations"] == [{"kind": "too_slow", "step": "phone:agent"}]
    assert item["segment"]["region"] == "na"
    r = await journey.get(
        "/v1/designed-journeys/care/conformance/journeys",
        params={**RANGE, "deviation": "conforming", "limit": 1},
        headers=tenant.headers,
    )
    assert [i["fitness"] for i in r.json()["items"]] == [1.0]


async def test_a_channel_level_design(journey, tenant):
    design = {"granularity": "channel", "steps": [{"activity": "phone"}, {"activity": "email"}]}
    r = await journey.put("/v1/designed-journeys/by-channel", json=design, headers=tenant.headers)
    assert r.status_code == 200, r.text
    body = await conformance(journey, tenant, name="by-channel")
    # c1 phone phone email: 2·2/(3+2) (a repeated phone step is inserted); c2 inserts web_chat
    # and repeats phone: 2·2/(4+2); c3 phone email: 1; c4 as c1
    assert body["granularity"] == "channel"
    assert body["journeys"] == 4
    assert body["conforming"] == 1
    assert body["fitness"]["mean"] == pytest.approx((0.8 + 4 / 6 + 1 + 0.8) / 4, abs=1e-4)
    r = await journey.get(
        "/v1/designed-journeys/by-channel/conformance",
        params={"granularity": "touchpoint"},
        headers=tenant.headers,
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "query.granularity"


async def test_a_late_event_changes_the_result_exactly(db, journey_settings, journey):
    tenant = await TenantFactory(db)()
    log = Log()
    log.step("c3", 0, "phone:ivr")
    log.step("c3", 2 * H, "email:followup")
    await load(db, journey_settings, tenant.id, log.events)
    await journey.put("/v1/designed-journeys/care", json=DESIGN, headers=tenant.headers)
    before = await conformance(journey, tenant)
    assert before["conforming"] == 0
    late = Log()
    late._n = 100
    late.step("c3", 30 * MIN, "phone:agent")  # arrives last, happened in between
    await load(db, journey_settings, tenant.id, late.events)
    after = await conformance(journey, tenant)
    assert after["journeys"] == 1
    assert after["conforming"] == 1
    assert after["deviations"] == []


async def test_versions_list_get_and_delete(journey, db):
    tenant = await TenantFactory(db)()
    url = "/v1/designed-journeys/v"
    first = (await journey.put(url, json=DESIGN, headers=tenant.headers)).json()
    same = (await journey.put(url, json=DESIGN, headers=tenant.headers)).json()
    assert first["version"] == same["version"] == 1
    changed = {**DESIGN, "scope": "all"}
    assert (await journey.put(url, json=changed, headers=tenant.headers)).json()["version"] == 2
    listed = (await journey.get("/v1/designed-journeys", headers=tenant.headers)).json()
    assert [d["name"] for d in listed["items"]] == ["v"]
    got = (await journey.get(url, headers=tenant.headers)).json()
    assert got["definition"]["scope"] == "all"
    assert (await journey.delete(url, headers=tenant.headers)).status_code == 204
    assert (await journey.get(url, headers=tenant.headers)).status_code == 404
    assert (await journey.get(f"{url}/conformance", headers=tenant.headers)).status_code == 404


BAD_DESIGNS = [
    {"steps": []},
    {"steps": [{"activity": "a"}, {"activity": "a"}]},
    {"steps": [{"activity": "a", "max_wait_s": 60}]},
    {"steps": [{"activity": "a", "optional": True}]},
    {"steps": [{"activity": "a"}, {"activity": "b", "max_wait_s": -1}]},
    {"steps": [{"activity": ""}]},
    {"steps": [{"activity": "a"}], "granularity": "planet"},
    {"steps": [{"activity": "a"}], "journey": "life"},
    {"steps": [{"activity": "a"}], "colour": "red"},
    {"steps": [{"activity": "a", "weight": 2}]},
    {"steps": [{"activity": f"a{i}"} for i in range(51)]},
    {},
]


@pytest.mark.parametrize("body", BAD_DESIGNS)
async def test_bad_designed_journeys_are_422(journey, tenant, body):
    r = await journey.put("/v1/designed-journeys/bad", json=body, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "detail"}


@pytest.mark.parametrize("name", ["Bad", "-x", "a" * 65, "a b"])
async def test_bad_names_are_422(journey, tenant, name):
    r = await journey.put(f"/v1/designed-journeys/{name}", json=DESIGN, headers=tenant.headers)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"by": "shoe_size"}, "query.by"),
        ({"segment.shoe_size": "9"}, "query.segment.shoe_size"),
        ({"from": "2025-03-04", "to": "2025-03-03"}, "query.to"),
        ({"colour": "red"}, "query.colour"),
    ],
)
async def test_bad_conformance_parameters_are_422(journey, tenant, params, loc):
    r = await journey.get(
        "/v1/designed-journeys/care/conformance", params=params, headers=tenant.headers
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


async def test_bad_deviation_filter_is_422(journey, tenant):
    r = await journey.get(
        "/v1/designed-journeys/care/conformance/journeys",
        params={"deviation": "lost:phone"},
        headers=tenant.headers,
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == "query.deviation"


async def test_scopes(journey, db, tenant):
    factory = TenantFactory(db)
    reader = await factory.key(tenant, scopes=["analytics:read"])
    writer = await factory.key(tenant, scopes=["events:write"])
    r = await journey.put(
        "/v1/designed-journeys/care", json=DESIGN, headers={"Authorization": f"Bearer {reader}"}
    )
    assert r.status_code == 403
    r = await journey.get(
        "/v1/designed-journeys/care/conformance", headers={"Authorization": f"Bearer {writer}"}
    )
    assert r.status_code == 403
    r = await journey.get(
        "/v1/designed-journeys/care/conformance",
        params=RANGE,
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert r.status_code == 200


async def test_tenant_isolation(journey, db, journey_settings, tenant):
    other = await TenantFactory(db)()
    assert (
        await journey.get("/v1/designed-journeys/care/conformance", headers=other.headers)
    ).status_code == 404
    log = Log()
    log.step("c1", 0, "phone:ivr")
    await load(db, journey_settings, other.id, log.events)
    await journey.put("/v1/designed-journeys/care", json=DESIGN, headers=other.headers)
    body = await conformance(journey, other)
    assert body["journeys"] == 1
    assert body["version"] == 1
    assert (await conformance(journey, tenant))["journeys"] == 4


async def test_counted_in_postgresql_equals_judging_each_journey(journey, db, journey_settings):
    """Random journeys with a timed, optional-step design: the endpoint's figures (counted by
    path in PostgreSQL, late steps counted there too) equal judging each journey on its own."""
    rng = random.Random(5)
    names = ["phone:ivr", "phone:agent", "web_chat:chat", "email:followup", "web:checkout"]
    design = {
        "journey": "customer",
        "steps": [
            {"activity": "phone:ivr"},
            {"activity": "web_chat:chat", "optional": True, "max_wait_s": 1800},
            {"activity": "phone:agent", "max_wait_s": 3600},
            {"activity": "email:followup"},
        ],
    }
    model = DesignedJourney.model_validate(design).model()
    log = Log()
    expected: dict[str | None, Counter] = {None: Counter(), "emea": Counter(), "na": Counter()}
    fitness: dict[str | None, list[float]] = {None: [], "emea": [], "na": []}
    for n in range(60):
        c, region = f"r{n}", rng.choice(["emea", "na"])
        log.traits(c, region=region)
        t, path, times = 0, [], []
        for _ in range(rng.randint(1, 6)):
            t += rng.choice([10 * MIN, 40 * MIN, 2 * H])
            path.append(rng.choice(names))
            times.append(t)
            log.step(c, t, path[-1])
        verdict = judge(path, times, model)
        if not rules.in_scope(path, model, "touching"):
            continue
        for key in (None, region):
            fitness[key].append(verdict.fitness)
            expected[key]["conforming"] += verdict.conforms
            expected[key].update(set(verdict.deviations))
    tenant = await TenantFactory(db)()
    await load(db, journey_settings, tenant.id, log.events)
    await journey.put("/v1/designed-journeys/rand", json=design, headers=tenant.headers)
    body = await conformance(journey, tenant, name="rand", by="region", limit=100)
    groups = {g["value"]: g for g in body["by_segment"]}
    for key, got in ((None, body), ("emea", groups["emea"]), ("na", groups["na"])):
        assert got["journeys"] == len(fitness[key])
        assert got["fitness"]["mean"] == pytest.approx(sum(fitness[key]) / len(fitness[key]),
                                                       abs=1e-4)  # fmt: skip
        assert got["conforming"] == expected[key]["conforming"]
        deviations = {(d["kind"], d["step"]): d["journeys"] for d in got["deviations"]}
        assert deviations == {k: v for k, v in expected[key].items() if k != "conforming"}
    assert any(k[0] == "too_slow" for k in expected[None])
