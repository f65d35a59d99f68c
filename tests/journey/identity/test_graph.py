"""Identity guards, provisional links, manual merge and split, tenant isolation — through Kafka."""

from __future__ import annotations

import uuid

from tests.journey.conftest import cloud_event, context_when, send
from tests.support import eventually


def ident(t: str, v: str, by: str | None = None) -> dict:
    return {"type": t, "value": v, **({"verified_by": by} if by else {})}


async def customer_of(journey, tenant, t: str, v: str) -> str:
    ctx = await context_when(journey, tenant.headers, lambda c: True, identifier_type=t, value=v)
    return ctx["customer_id"]


async def test_junk_and_shared_identifiers_do_not_merge_unrelated_customers(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    n = uuid.uuid4().hex[:6]
    office = "+1 212 555 0147"
    events = [
        cloud_event(
            tenant=tenant.id,
            identifiers=[
                ident("email", f"a{i}-{n}@corp.test", "login"),
                ident("phone", "0000000000"),
            ],
        )
        for i in range(2)
    ] + [
        cloud_event(
            tenant=tenant.id,
            identifiers=[
                ident("email", f"o{i}-{n}@corp.test", "login"),
                ident("phone", office, "caller_id"),
            ],
        )
        for i in range(4)
    ]
    for event in events:  # one at a time, so the share count grows in a known order
        await send(producer, journey_settings, event)
        email = event["data"]["identifiers"][0]["value"]
        await customer_of(journey, tenant, "email", email)

    customers = {
        await customer_of(journey, tenant, "email", e["data"]["identifiers"][0]["value"])
        for e in events
    }
    assert len(customers) == 6  # nobody merged
    junk = await journey.get(
        "/v1/context",
        params={"identifier_type": "phone", "value": "0000000000"},
        headers=tenant.headers,
    )
    assert junk.status_code == 404  # a junk value is never linked
    # The office number is held by the first customers up to the share limit (3), then ignored.
    graph = (
        await journey.get(
            "/v1/context",
            params={"identifier_type": "phone", "value": office},
            headers=tenant.headers,
        )
    ).json()
    assert graph["ambiguous"]["holders"] == 3
    fourth = await customer_of(journey, tenant, "email", f"o3-{n}@corp.test")
    ids = (await journey.get(f"/v1/customers/{fourth}/identities", headers=tenant.headers)).json()
    assert [i["type"] for i in ids["identifiers"]] == ["email"]


async def test_weak_link_between_strong_customers_stays_provisional(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    n = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{n}@x.test", "+1 646 555 0111"
    await send(
        producer,
        journey_settings,
        cloud_event(tenant=tenant.id, identifiers=[ident("email", alice, "login")]),
        cloud_event(tenant=tenant.id, identifiers=[ident("phone", bob, "otp")]),
    )
    a = await customer_of(journey, tenant, "email", alice)
    b = await customer_of(journey, tenant, "phone", bob)
    bridge = cloud_event(
        tenant=tenant.id,
        type="contact.started",
        identifiers=[ident("email", alice, "self_asserted"), ident("phone", bob, "caller_id")],
    )
    await send(producer, journey_settings, bridge)

    async def provisional() -> dict | None:
        r = await journey.get(f"/v1/customers/{b}/identities", headers=tenant.headers)
        links = r.json()["provisional_links"]
        return links[0] if links else None

    link = await eventually(provisional)
    assert {link["customer_id"], link["other_id"]} == {a, b}
    assert link["event_id"] == bridge["id"]
    assert await customer_of(journey, tenant, "email", alice) == a
    assert await customer_of(journey, tenant, "phone", bob) == b


async def test_merge_then_split_restores_both_sides_with_later_events(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    admin = {"Authorization": f"Bearer {await make_tenant.key(tenant, scopes=['admin'])}"}
    n = uuid.uuid4().hex[:6]
    visitor, member = f"cookie-{n}", f"m-{n}@x.test"
    await send(
        producer,
        journey_settings,
        cloud_event(
            tenant=tenant.id,
            type="fact.collected",
            identifiers=[ident("anonymous_id", visitor, "cookie")],
            name="favourite_colour",
            value="green",
        ),
        cloud_event(
            tenant=tenant.id,
            type="fact.collected",
            identifiers=[ident("email", member, "login")],
            name="plan",
            value="gold",
        ),
    )
    v = await customer_of(journey, tenant, "anonymous_id", visitor)
    m = await customer_of(journey, tenant, "email", member)
    assert v != m
    # The visitor logs in: a weak cookie joins a strongly identified member → merged.
    await send(
        producer,
        journey_settings,
        cloud_event(
            tenant=tenant.id,
            type="identity.linked",
            identifiers=[ident("anonymous_id", visitor, "cookie"), ident("email", member, "login")],
            traits={"tier": "gold"},
        ),
    )
    merged = await context_when(
        journey,
        tenant.headers,
        lambda c: {"favourite_colour", "plan"} <= {f["name"] for f in c["facts"]},
        identifier_type="anonymous_id",
        value=visitor,
    )
    survivor = merged["customer_id"]
    restored_expected = v if survivor == m else m
    # Later, an event on the cookie alone (it belongs to the visitor's side).
    late = cloud_event(
        tenant=tenant.id,
        type="fact.collected",
        identifiers=[ident("anonymous_id", visitor, "cookie")],
        name="shoe_size",
        value=42,
    )
    await send(producer, journey_settings, late)
    await context_when(
        journey,
        tenant.headers,
        lambda c: "shoe_size" in {f["name"] for f in c["facts"]},
        identifier_type="email",
        value=member,
    )

    denied = await journey.post(f"/v1/customers/{survivor}/split", headers=tenant.headers)
    assert denied.status_code == 403
    r = await journey.post(
        f"/v1/customers/{survivor}/split", json={"reason": "shared laptop"}, headers=admin
    )
    assert r.status_code == 200, r.text
    split = r.json()
    assert split["restored_id"] == restored_expected
    ctx_v = (await journey.get(f"/v1/customers/{v}/context", headers=tenant.headers)).json()
    ctx_m = (await journey.get(f"/v1/customers/{m}/context", headers=tenant.headers)).json()
    assert ctx_v["customer_id"] == v
    assert ctx_m["customer_id"] == m
    assert {f["name"] for f in ctx_v["facts"]} == {"favourite_colour", "shoe_size"}
    assert {f["name"] for f in ctx_m["facts"]} == {"plan"}
    assert await customer_of(journey, tenant, "anonymous_id", visitor) == v
    assert await customer_of(journey, tenant, "email", member) == m
    again = await journey.post(f"/v1/customers/{survivor}/split", headers=admin)
    assert again.status_code == 409

    # An admin merges them by hand; the merged id answers with the survivor.
    r = await journey.post(
        "/v1/customers/merge",
        json={"survivor_id": m, "merged_id": v, "reason": "confirmed"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    via_old = (await journey.get(f"/v1/customers/{v}/context", headers=tenant.headers)).json()
    assert via_old["customer_id"] == m
    assert via_old["merged_from"] == v
    assert {"favourite_colour", "shoe_size", "plan"} <= {f["name"] for f in via_old["facts"]}
    graph = (await journey.get(f"/v1/customers/{m}/identities", headers=tenant.headers)).json()
    assert [g["rule"] for g in graph["merges"]][-1] == "manual"
    assert len(graph["splits"]) == 1


async def test_agent_records_a_fact(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    email = f"f-{uuid.uuid4().hex[:6]}@x.test"
    await send(
        producer,
        journey_settings,
        cloud_event(tenant=tenant.id, identifiers=[ident("email", email)]),
    )
    cid = await customer_of(journey, tenant, "email", email)
    r = await journey.post(
        f"/v1/customers/{cid}/facts",
        json={
            "name": "preferred_language",
            "value": "de",
            "verified_by": "agent",
            "channel": "phone",
        },
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["fact"]["verified_by"] == "agent"
    ctx = (await journey.get(f"/v1/customers/{cid}/context", headers=tenant.headers)).json()
    assert ctx["facts"][0]["name"] == "preferred_language"
    assert ctx["facts"][0]["source"].startswith("waypoint-journey/agent/")
    bad = await journey.post(
        f"/v1/customers/{cid}/facts", json={"value": 1}, headers=tenant.headers
    )
    assert bad.status_code == 422


async def test_tenants_never_see_each_other(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    a = await make_tenant(scopes=["context:read"])
    b = await make_tenant(scopes=["admin"])
    email = f"iso-{uuid.uuid4().hex[:6]}@x.test"
    await send(
        producer, journey_settings, cloud_event(tenant=a.id, identifiers=[ident("email", email)])
    )
    cid = await customer_of(journey, a, "email", email)
    params = {"identifier_type": "email", "value": email}
    assert (await journey.get("/v1/context", params=params, headers=b.headers)).status_code == 404
    for path in ("context", "timeline", "identities"):
        r = await journey.get(f"/v1/customers/{cid}/{path}", headers=b.headers)
        assert r.status_code == 404, path
    assert (await journey.post(f"/v1/customers/{cid}/split", headers=b.headers)).status_code == 404
    hint = await journey.get("/v1/route-hint", params=params, headers=b.headers)
    assert hint.json()["known"] is False
    assert (await journey.get("/v1/context", params=params)).status_code == 401
    writer = await make_tenant(scopes=["events:write"])
    assert (
        await journey.get("/v1/context", params=params, headers=writer.headers)
    ).status_code == 403
    bad = await journey.get(
        "/v1/context", params={"identifier_type": "fax", "value": "1"}, headers=a.headers
    )
    assert bad.status_code == 400
    assert "unknown identifier_type" in bad.json()["detail"]
