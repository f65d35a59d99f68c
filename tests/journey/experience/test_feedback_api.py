"""Feedback on steps through the API: attached to map nodes, summarised on GET /v1/journey-map,
listed masked and paged by GET /v1/feedback?node=; follows a merge; scopes; tenant isolation."""

from __future__ import annotations

import pytest

from services.journey.maps import maintain
from tests.journey.conformance.support import BASE, MIN, H, Log, load
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import apply_chunk, email, envelope
from tests.support import TenantFactory

RANGE = {"from": "2025-03-03", "to": "2025-03-10"}


def feedback(log: Log, customer: str, t: int, comment: str, **data):
    log.ev(customer, "feedback.submitted", t, channel="app", comment=comment, **data)


@pytest.fixture(scope="module")
async def tenant(db, journey_settings):
    tenant = await TenantFactory(db)()
    log = Log()
    call = log.step("a", 0, "phone:agent_call")
    log.step("a", H, "web_chat:chat")
    # an agent's note inside the call, a customer's comment about the call afterwards
    feedback(log, "a", 10 * MIN, "Customer had to repeat the problem", author="agent",
             interaction_id=call)  # fmt: skip
    feedback(log, "a", 2 * H, "Call me on +1 (415) 555-0123, the agent was rude", rating=1,
             about=call)  # fmt: skip
    # about a touchpoint by name; and one with nothing named: the last step before
    log.step("b", 0, "phone:agent_call")
    feedback(log, "b", 3 * H, "Long hold music", rating=2, about="agent_call")
    feedback(log, "b", 4 * H, "write to b@example.org", rating=5)
    for n in range(5):
        feedback(log, "c", n * MIN + MIN, f"comment {n}", rating=3)
    log.step("c", 0, "web_chat:chat")
    await load(db, journey_settings, tenant.id, log.events)
    return tenant


async def get(journey, tenant, path, **params):
    r = await journey.get(path, params={**RANGE, **params}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_map_nodes_carry_a_feedback_summary(journey, tenant):
    body = await get(journey, tenant, "/v1/journey-map")
    nodes = {n["id"]: n["feedback"] for n in body["nodes"]}
    call = nodes["phone:agent_call"]
    assert call["count"] == 4
    assert (call["customer"], call["agent"]) == (3, 1)
    assert call["rating_n"] == 3
    assert call["mean_rating"] == pytest.approx((1 + 2 + 5) / 3, abs=1e-3)
    assert [c["comment"] for c in call["latest"]] == [
        "write to ••••",
        "Long hold music",
        "Call me on ••••, the agent was rude",
    ]
    assert nodes["web_chat:chat"]["count"] == 5
    channel = await get(journey, tenant, "/v1/journey-map", granularity="channel")
    assert {n["id"]: n["feedback"]["count"] for n in channel["nodes"]} == {
        "phone": 4,
        "web_chat": 5,
    }


async def test_feedback_on_a_node_is_masked_and_paged(journey, tenant):
    first = await get(journey, tenant, "/v1/feedback", node="web_chat:chat", limit=2)
    assert first["summary"]["count"] == 5
    assert [i["comment"] for i in first["items"]] == ["comment 4", "comment 3"]
    assert first["next_cursor"]
    seen = [i["event_id"] for i in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = await get(journey, tenant, "/v1/feedback", node="web_chat:chat", limit=2,
                         cursor=cursor)  # fmt: skip
        seen += [i["event_id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    call = await get(journey, tenant, "/v1/feedback", node="phone:agent_call")
    by = {i["comment"]: i for i in call["items"]}
    rude = by["Call me on ••••, the agent was rude"]
    assert rude["masked"] is True
    assert rude["attached_by"] == "about_step"
    # the number in no form anywhere ("555" alone also matched a customer id's hex now and then)
    assert not any(form in str(call) for form in ("555-0123", "5550123", "(415)"))
    assert by["Long hold music"]["attached_by"] == "about_touchpoint"
    assert by["Customer had to repeat the problem"]["attached_by"] == "interaction"
    assert by["write to ••••"]["attached_by"] == "last_step"
    agents = await get(journey, tenant, "/v1/feedback", node="phone:agent_call", author="agent")
    assert [i["author"] for i in agents["items"]] == ["agent"]


async def test_bad_parameters(journey, tenant):
    for params, loc in (({"cursor": "nope"}, "query.cursor"), ({"author": "bot"}, "author")):
        r = await journey.get("/v1/feedback", params=params, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert loc in str(r.json()["detail"])


async def test_scopes_and_tenant_isolation(journey, db, tenant):
    writer = await TenantFactory(db).key(tenant, scopes=["events:write"])
    r = await journey.get("/v1/feedback", headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 403
    other = await TenantFactory(db)()
    body = await get(journey, other, "/v1/feedback")
    assert body["items"] == []
    assert body["summary"]["count"] == 0


async def test_feedback_follows_a_merge(journey, db, journey_settings):
    tenant = await TenantFactory(db)()
    log = Log()
    log.step("x", 0, "phone:agent_call")
    feedback(log, "y", H, "from another address", rating=4)  # y: no steps, unattached
    await load(db, journey_settings, tenant.id, log.events)
    body = await get(journey, tenant, "/v1/feedback")
    assert [i["node"] for i in body["items"]] == [None]
    # one event naming both addresses (both verified) merges y into x
    link = Ev("link-1", "identity.linked", 30 * MIN, {}, "x")
    item = envelope(tenant.id, link, BASE, [email(tenant.id, "x"), email(tenant.id, "y")])
    await apply_chunk(db, journey_settings, [item])
    await maintain.drain(db)
    body = await get(journey, tenant, "/v1/feedback")
    assert [(i["node"], i["attached_by"]) for i in body["items"]] == [
        ("phone:agent_call", "last_step")
    ]
