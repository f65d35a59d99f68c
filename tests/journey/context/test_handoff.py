"""The hand-off: social → web chat → phone, through Kafka, seen by the agent who takes the call."""

from __future__ import annotations

import uuid

from tests.journey.conftest import cloud_event, context_when, send
from tests.support import eventually


def scenario(tenant: str, n: str) -> tuple[list[dict], str]:
    handle, chat, phone = f"twitter:@alice_{n}", f"chat-{n}", "+1 415 555 0199"
    email = f"Alice.{n}@Shop.test"
    common = {"tenant": tenant}
    events = [
        cloud_event(
            **common,
            type="message.received",
            identifiers=[{"type": "social", "value": handle}],
            channel="social",
            text="where is my parcel??",
            sentiment=-0.6,
        ),
        cloud_event(
            **common,
            type="contact.started",
            identifiers=[
                {"type": "chat_session", "value": chat},
                {"type": "social", "value": handle},
                {"type": "email", "value": email, "verified_by": "self_asserted"},
            ],
            channel="web_chat",
            interaction_id=chat,
            touchpoint="web_chat",
            department="support",
            contact_reason="late delivery",
        ),
        cloud_event(
            **common,
            type="agent.joined",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            interaction_id=chat,
            agent_id="agent-7",
            team="delivery-desk",
        ),
        cloud_event(
            **common,
            type="fact.collected",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            interaction_id=chat,
            agent_id="agent-7",
            name="order_number",
            value="ORD-1234",
            verified_by="agent",
        ),
        cloud_event(
            **common,
            type="fact.collected",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            interaction_id=chat,
            name="problem",
            value="parcel marked delivered but never arrived",
        ),
        cloud_event(
            **common,
            type="fact.collected",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            name="card_last4",
            value="4242",
            sensitive=True,
        ),
        cloud_event(
            **common,
            type="case.opened",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            interaction_id=chat,
            case_id=f"CASE-{n}",
            reason="late delivery",
        ),
        # The customer calls back; the IVR checks a PIN and ties the number to the e-mail.
        cloud_event(
            **common,
            type="contact.started",
            identifiers=[{"type": "phone", "value": phone, "verified_by": "caller_id"}],
            channel="phone",
            interaction_id=f"call-{n}",
        ),
        cloud_event(
            **common,
            type="ivr.step",
            identifiers=[
                {"type": "phone", "value": phone, "verified_by": "ivr_pin"},
                {"type": "email", "value": email, "verified_by": "ivr_pin"},
            ],
            channel="ivr",
            interaction_id=f"call-{n}",
            node="verify-pin",
        ),
    ]
    return events, "+14155550199"


def has_everything(ctx: dict) -> bool:
    facts = {f["name"] for f in ctx["facts"]}
    return (
        {"order_number", "problem"} <= facts
        and bool(ctx["open_cases"])
        and {"social", "web_chat", "ivr"} <= set(ctx["channels"])
    )


async def test_agent_sees_what_the_customer_already_said_on_other_channels(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    n = uuid.uuid4().hex[:6]
    events, phone = scenario(tenant.id, n)
    await send(producer, journey_settings, *events)

    ctx = await context_when(
        journey, tenant.headers, has_everything, identifier_type="phone", value="(415) 555-0199"
    )
    facts = {f["name"]: f for f in ctx["facts"]}
    assert facts["order_number"]["value"] == "ORD-1234"
    assert facts["order_number"]["channel"] == "web_chat"
    assert facts["order_number"]["verified_by"] == "agent"
    assert facts["order_number"]["event_id"] == events[3]["id"]
    assert facts["problem"]["value"] == "parcel marked delivered but never arrived"
    assert facts["card_last4"]["value"] == "••••"  # sensitive, masked without admin
    assert [c["case_id"] for c in ctx["open_cases"]] == [f"CASE-{n}"]
    assert ctx["open_cases"][0]["reason"] == "late delivery"
    assert ctx["last_agent"]["agent_id"] == "agent-7"
    types = {i["type"] for i in ctx["identities"]}
    assert types == {"phone", "email", "social", "chat_session"}
    summary = ctx["summary"]
    assert summary["likely_reason"] == "late delivery"
    assert {"order_number", "problem"} <= set(summary["do_not_ask"])
    assert summary["next_step"]["action"].startswith(f"continue case CASE-{n}")

    hint = (
        await journey.get(
            "/v1/route-hint",
            params={"identifier_type": "phone", "value": phone},
            headers=tenant.headers,
        )
    ).json()
    assert hint["known"] is True
    assert hint["skip_ivr"] is True
    assert hint["preferred_agent"] == "agent-7"
    assert hint["preferred_team"] == "delivery-desk"
    assert any("open case" in r for r in hint["reasons"])

    # The same customer by e-mail (normalized) and by id; the graph explains the merge.
    by_email = await journey.get(
        "/v1/context",
        params={"identifier_type": "email", "value": f"  ALICE.{n}@shop.TEST "},
        headers=tenant.headers,
    )
    assert by_email.json()["customer_id"] == ctx["customer_id"]
    graph = (
        await journey.get(f"/v1/customers/{ctx['customer_id']}/identities", headers=tenant.headers)
    ).json()
    # Arrival order across partitions decides whether the call first made its own customer
    # (then merged on the IVR's strong link) or matched at once; either way the graph says why.
    phone_link = next(i for i in graph["identifiers"] if i["type"] == "phone")
    assert phone_link["verified_by"] == "ivr_pin"
    ours = {e["id"] for e in events}
    assert all(m["event_id"] in ours and m["rule"] for m in graph["merges"])

    page1 = (
        await journey.get(
            f"/v1/customers/{ctx['customer_id']}/timeline",
            params={"limit": 4},
            headers=tenant.headers,
        )
    ).json()
    page2 = (
        await journey.get(
            f"/v1/customers/{ctx['customer_id']}/timeline",
            params={"limit": 50, "cursor": page1["next_cursor"]},
            headers=tenant.headers,
        )
    ).json()
    ids = [i["event_id"] for i in page1["items"] + page2["items"]]
    assert sorted(ids) == sorted(e["id"] for e in events)
    assert page2["next_cursor"] is None


async def test_sensitive_facts_are_revealed_to_admin_only(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    admin_key = await make_tenant.key(tenant, scopes=["admin"])
    email = f"s-{uuid.uuid4().hex[:6]}@shop.test"
    await send(
        producer,
        journey_settings,
        cloud_event(
            tenant=tenant.id,
            type="fact.collected",
            identifiers=[{"type": "email", "value": email, "verified_by": "login"}],
            name="date_of_birth",
            value="1990-01-02",
            sensitive=True,
        ),
    )
    ctx = await context_when(
        journey, tenant.headers, lambda c: bool(c["facts"]), identifier_type="email", value=email
    )
    assert ctx["facts"][0]["value"] == "••••"
    params = {"identifier_type": "email", "value": email, "reveal_sensitive": "true"}
    denied = await journey.get("/v1/context", params=params, headers=tenant.headers)
    assert denied.status_code == 403
    shown = await journey.get(
        "/v1/context", params=params, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert shown.json()["facts"][0]["value"] == "1990-01-02"


async def test_repeated_screen_pops_are_served_from_the_cache_until_a_change(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    from prometheus_client import REGISTRY

    def hits() -> float:
        return (
            REGISTRY.get_sample_value("waypoint_journey_context_cache_total", {"result": "hit"})
            or 0
        )

    tenant = await make_tenant(scopes=["context:read"])
    email = f"cache-{uuid.uuid4().hex[:6]}@shop.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
    params = {"identifier_type": "email", "value": email}
    await context_when(journey, tenant.headers, lambda c: True, **params)
    responses: list = []

    async def two_pops_from_the_cache() -> bool:
        # The first event's own change notice may still be on its way and empty the cache
        # once; after that, repeated screen pops must be cache hits with the same answer.
        before = hits()
        responses[:] = [
            await journey.get("/v1/context", params=params, headers=tenant.headers)
            for _ in range(3)
        ]
        return hits() >= before + 2 and responses[1].json() == responses[2].json()

    await eventually(two_pops_from_the_cache, timeout=10)
    first = responses[-1]
    await send(
        producer,
        journey_settings,
        cloud_event(tenant=tenant.id, type="fact.collected", identifiers=ident, name="x", value=1),
    )
    changed = await context_when(journey, tenant.headers, lambda c: bool(c["facts"]), **params)
    assert changed["version"] > first.json()["version"]
