"""GET /v1/experience on hand-built and simulated journeys: a survey after a chat → phone switch
lands on that edge; transfers and repeats before the survey; a planted moment of truth is found
(CSAT and churn) and none on data without an effect; scopes; tenant isolation."""

from __future__ import annotations

import random

import pytest

from tests.journey.conformance.support import MIN, H, Log, load
from tests.support import TenantFactory

RANGE = {"from": "2025-03-03", "to": "2025-03-10"}


async def experience(journey, tenant, **params):
    r = await journey.get("/v1/experience", params={**RANGE, **params}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


def survey(log: Log, customer: str, t: int, kind: str, score: float, about: str | None = None):
    data = {"survey": kind, "score": score}
    if about:
        data["about_interaction_id"] = about
    log.ev(customer, "survey.responded", t, channel="email", **data)


@pytest.fixture(scope="module")
async def known(db, journey_settings):
    tenant = await TenantFactory(db)()
    log = Log()
    log.traits("switch", region="emea")
    # chat → phone switch, survey about the call two hours later
    log.step("switch", 0, "web_chat:chat")
    call = log.step("switch", H, "phone:inbound")
    log.ev("switch", "contact.transferred", H + MIN, interaction_id=call)
    log.ev("switch", "contact.transferred", H + 2 * MIN, interaction_id=call)
    survey(log, "switch", 3 * H, "csat", 2, about=call)
    survey(log, "switch", 3 * H, "nps", 3, about=call)
    # a repeat call and a survey with no interaction: the last step before it
    log.step("repeat", 0, "phone:inbound")
    log.step("repeat", 30 * MIN, "phone:inbound")
    survey(log, "repeat", H, "csat", 5)
    survey(log, "repeat", H, "ces", 2)
    # a survey before any step: unattached
    survey(log, "early", 0, "csat", 4)
    log.step("early", H, "web:checkout")
    await load(db, journey_settings, tenant.id, log.events)
    return tenant


async def test_a_survey_after_a_chat_to_phone_switch_lands_on_that_edge(journey, known):
    body = await experience(journey, known)
    assert body["surveys"] == {"ces": 1, "csat": 2, "nps": 1}
    assert body["unattached"] == 1
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    switch = edges[("web_chat:chat", "phone:inbound")]
    assert switch["csat"] == {"n": 1, "mean": 2.0, "satisfied_share": 0.0}
    assert switch["nps"] == {"n": 1, "score": -100.0, "promoters": 0, "detractors": 1}
    repeat = edges[("phone:inbound", "phone:inbound")]
    assert repeat["csat"]["mean"] == 5.0
    assert repeat["ces"] == {"n": 1, "mean": 2.0}
    touchpoints = {t["node"]: t for t in body["touchpoints"]}
    assert touchpoints["phone:inbound"]["csat"]["n"] == 2
    transfers = {t["transfers"]: t["responses"] for t in body["transfers_before"]}
    assert transfers == {"0": 2, "2": 2}
    repeats = {t["repeats"]: t["responses"] for t in body["repeats_before"]}
    assert repeats == {"0": 2, "1": 2}
    assert [s["stage"] for s in body["stages"]] == ["support"]


async def test_granularity_and_segment(journey, known):
    body = await experience(journey, known, granularity="channel")
    assert {(e["source"], e["target"]) for e in body["edges"]} == {
        ("web_chat", "phone"),
        ("phone", "phone"),
    }
    emea = await experience(journey, known, **{"segment.region": "emea"})
    assert emea["surveys"] == {"csat": 1, "nps": 1}
    later = await experience(journey, known, **{"from": "2025-03-10", "to": "2025-03-11"})
    assert later["surveys"] == {}
    assert later["journeys"] == 0


def simulated(seed: int, effect: bool) -> Log:
    """200 people: IVR, sometimes the retention desk, then an agent; a CSAT survey about the
    agent call; some churn. With ``effect`` the retention desk costs 2 CSAT points and
    triples churn; without it, scores and churn ignore it."""
    rng = random.Random(seed)
    log = Log()
    for n in range(200):
        c = f"p{n}"
        t = rng.randrange(0, 5 * 24) * H
        log.step(c, t, "phone:ivr")
        retention = rng.random() < 0.4
        if retention:
            log.step(c, t + 5 * MIN, "phone:retention")
        agent = log.step(c, t + 10 * MIN, "phone:agent")
        score = min(5, max(1, round(rng.gauss(4.2, 0.7) - (2 if effect and retention else 0))))
        survey(log, c, t + H, "csat", score, about=agent)
        churn = 0.6 if effect and retention else 0.2
        if rng.random() < churn:
            log.ev(c, "customer.churned", t + 2 * H, reason="price")
    return log


async def test_a_planted_moment_of_truth_is_found(journey, db, journey_settings):
    tenant = await TenantFactory(db)()
    await load(db, journey_settings, tenant.id, simulated(11, effect=True).events)
    body = await experience(journey, tenant)
    found = {(m["metric"], m.get("node") or m.get("outcome")): m for m in body["moments_of_truth"]}
    assert set(found) == {("csat", "phone:retention"), ("churn", "phone:retention")}
    csat = found[("csat", "phone:retention")]
    assert csat["direction"] == "worse"
    assert csat["ci95"][0] < csat["effect"] < csat["ci95"][1] < 0
    assert csat["with"]["n"] + csat["without"]["n"] == 200
    assert csat["adjusted_p"] < 0.05
    churn = found[("churn", "phone:retention")]
    assert churn["direction"] == "worse"
    assert churn["effect"] > 0
    assert churn["ci95"][0] > 0
    # the largest |d| first; at most max_moments
    assert body["moments_of_truth"][0]["metric"] == "csat"
    one = await experience(journey, tenant, max_moments=1)
    assert len(one["moments_of_truth"]) == 1


async def test_no_moment_of_truth_without_an_effect(journey, db, journey_settings):
    tenant = await TenantFactory(db)()
    await load(db, journey_settings, tenant.id, simulated(12, effect=False).events)
    body = await experience(journey, tenant)
    assert body["moments_tested"]["csat"] >= 1
    assert body["moments_of_truth"] == []


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"max_moments": 21}, "query.max_moments"),
        ({"min_sample": 1}, "query.min_sample"),
        ({"segment.shoe_size": "9"}, "query.segment.shoe_size"),
        ({"granularity": "planet"}, "query.granularity"),
    ],
)
async def test_bad_parameters_are_422(journey, known, params, loc):
    r = await journey.get("/v1/experience", params=params, headers=known.headers)
    assert r.status_code == 422, r.text
    assert loc in str(r.json()["detail"])


async def test_scopes_and_tenant_isolation(journey, db, known):
    writer = await TenantFactory(db).key(known, scopes=["events:write"])
    r = await journey.get("/v1/experience", headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 403
    other = await TenantFactory(db)()
    body = await experience(journey, other)
    assert body["surveys"] == {}
    assert body["journeys"] == 0
