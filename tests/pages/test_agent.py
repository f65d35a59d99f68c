"""The agent desktop in a real browser: the hand-off screen pop, live updates over SSE,
recording a fact, masking and an audited reveal, a 400 px side panel, tenant isolation."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from playwright.async_api import Page, expect
from sqlalchemy import text

from tests.pages.conftest import Stack, screenshot, sign_in
from tests.support import cloud_event, stands_alone


def handoff(tenant: str, n: str) -> tuple[list[dict], str]:
    """Chat first (with facts, one sensitive), then a phone call tied to it by an IVR PIN check."""
    chat, email, phone = f"chat-{n}", f"dana.{n}@shop.test", f"+1 212 555 {int(n, 16) % 10000:04d}"
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    at = [t0 + timedelta(minutes=i) for i in range(8)]
    events = [
        cloud_event(tenant=tenant, type="contact.started", time=at[0], channel="web_chat",
                    identifiers=[{"type": "chat_session", "value": chat},
                                 {"type": "email", "value": email, "verified_by": "otp"}],
                    interaction_id=chat, touchpoint="web_chat", contact_reason="refund"),
        cloud_event(tenant=tenant, type="agent.joined", time=at[1], channel="web_chat",
                    identifiers=[{"type": "chat_session", "value": chat}], interaction_id=chat,
                    agent_id="agent-42", team="refunds"),
        cloud_event(tenant=tenant, type="fact.collected", time=at[2], channel="web_chat",
                    identifiers=[{"type": "chat_session", "value": chat}], interaction_id=chat,
                    agent_id="agent-42", name="order_number", value=f"ORD-{n}",
                    verified_by="agent"),
        cloud_event(tenant=tenant, type="fact.collected", time=at[3], channel="web_chat",
                    identifiers=[{"type": "chat_session", "value": chat}], name="card_last4",
                    value="4242", sensitive=True),
        cloud_event(tenant=tenant, type="case.opened", time=at[4], channel="web_chat",
                    identifiers=[{"type": "chat_session", "value": chat}], interaction_id=chat,
                    case_id=f"CASE-{n}", reason="refund"),
        cloud_event(tenant=tenant, type="contact.started", time=at[5], channel="phone",
                    identifiers=[{"type": "phone", "value": phone, "verified_by": "caller_id"}],
                    interaction_id=f"call-{n}"),
        cloud_event(tenant=tenant, type="ivr.step", time=at[6], channel="ivr",
                    identifiers=[{"type": "phone", "value": phone, "verified_by": "ivr_pin"},
                                 {"type": "email", "value": email, "verified_by": "ivr_pin"}],
                    interaction_id=f"call-{n}", node="verify-pin"),
    ]  # fmt: skip
    return events, phone


async def screen_pop(page: Page, stack: Stack, phone: str) -> None:
    """The CTI link, retried until the pipeline has linked the call to the chat."""
    url = f"{stack.journey.url}/app/agent?identifier_type=phone&value={quote(phone)}"
    deadline = time.monotonic() + 60
    while True:
        await page.goto(url)
        if await page.locator("[data-fact=order_number]").count():
            return
        assert time.monotonic() < deadline, "the hand-off never reached the screen pop"
        await page.wait_for_timeout(300)


async def handed_off(page: Page, stack: Stack, key: str) -> tuple[str, str]:
    """A new hand-off of tenant a sent, signed in with ``key``, the call popped: (n, phone)."""
    n = uuid.uuid4().hex[:6]
    events, phone = handoff(stack.a.id, n)
    await stack.send(*events)
    await sign_in(page, stack.journey.url, key)
    await screen_pop(page, stack, phone)
    return n, phone


async def test_handoff_a_phone_screen_pop_shows_what_was_said_on_chat(stack: Stack, page: Page):
    n, _ = await handed_off(page, stack, stack.a.key)

    await expect(page.locator("[data-fact=order_number]")).to_contain_text(f"ORD-{n}")
    await expect(page.locator("[data-fact=order_number]")).to_contain_text("agent")  # verified
    await expect(page.locator("[data-section=cases]")).to_contain_text(f"CASE-{n}")
    await expect(page.locator("[data-section=last-agent]")).to_contain_text("agent-42")
    await expect(page.locator("[data-section=route]")).to_contain_text("skip the IVR")
    await expect(page.locator("[data-section=summary]")).to_contain_text("order_number")
    await expect(page.locator("[data-section=identities]")).to_contain_text("otp")
    timeline = page.locator("[data-section=timeline]")
    await expect(timeline).to_contain_text("ivr.step")
    await expect(timeline).to_contain_text("web_chat")
    await expect(timeline.locator("svg[aria-label=web_chat]").first).to_be_visible()
    # the sensitive fact is masked even for an admin until revealed
    await expect(page.locator("[data-fact=card_last4]")).to_contain_text("••••")
    await expect(page.locator("[data-fact=card_last4]")).not_to_contain_text("4242")
    await screenshot(page, "agent-card.png")


async def test_the_card_shows_the_name_a_purchase_an_excerpt_and_the_engagement_score(
    stack: Stack, page: Page
):
    n = uuid.uuid4().hex[:6]
    email = f"grace.{n}@navy.test"
    who = [{"type": "email", "value": email, "verified_by": "login"}]
    await stack.send(
        cloud_event(tenant=stack.a.id, type="identity.linked", identifiers=who, channel="web",
                    traits={"firstName": "Grace", "lastName": "Hopper"}),
        cloud_event(tenant=stack.a.id, type="purchase.completed", identifiers=who, channel="web",
                    order_id=f"ORD-{n}", amount=42.5, currency="USD"),
        cloud_event(tenant=stack.a.id, type="message.received", identifiers=who,
                    channel="web_chat", text="The invoice shows the wrong VAT number."),
        cloud_event(tenant=stack.a.id, type="product.used", identifiers=who, channel="app",
                    active_seats=3, purchased_seats=4),
    )  # fmt: skip
    await sign_in(page, stack.journey.url, stack.a_agent)
    url = f"{stack.journey.url}/app/agent?identifier_type=email&value={quote(email)}"
    deadline = time.monotonic() + 60
    while not await page.locator("[data-order]").count():
        assert time.monotonic() < deadline, "the customer never reached the agent desktop"
        await page.goto(url)
        await page.wait_for_timeout(300)
    await expect(page.locator("#who-title")).to_have_text("Grace Hopper")
    await expect(page.locator(f"[data-order=ORD-{n}]")).to_contain_text("42.50 USD")
    await expect(page.locator("[data-section=timeline]")).to_contain_text("wrong VAT number")
    # the score comes from the alerts service, through the engagement topic, live
    await expect(page.locator("[data-section=engagement] [data-score]")).to_have_text(
        re.compile(r"^\d+\.\d$"), timeout=30_000
    )


async def test_a_live_update_arrives_without_reload(stack: Stack, page: Page, record_property):
    _, phone = await handed_off(page, stack, stack.a.key)
    await expect(page.locator("[data-live-status]")).to_have_text("live")
    await page.evaluate("window.__same_page = true")

    started = time.monotonic()
    await stack.send(
        cloud_event(tenant=stack.a.id, type="fact.collected", channel="sms",
                    identifiers=[{"type": "phone", "value": phone, "verified_by": "otp"}],
                    name="delivery_address", value="12 Elm Street")
    )  # fmt: skip
    await expect(page.locator("[data-fact=delivery_address]")).to_contain_text(
        "12 Elm Street", timeout=15_000
    )
    latency = time.monotonic() - started
    assert await page.evaluate("window.__same_page") is True  # no reload happened
    record_property("live_update_seconds", round(latency, 3))  # send → ingest → journey → SSE


async def test_recording_a_fact_validates_and_shows_it_live(stack: Stack, page: Page, problems):
    problems.allow("/facts", 422)  # the form sent without a name, on purpose
    await handed_off(page, stack, stack.a.key)
    await expect(page.locator("[data-live-status]")).to_have_text("live")

    form = page.locator("#fact-form")
    await form.locator("#fact-value").fill("blue")
    await form.locator("button[type=submit]").click()  # no fact name
    await expect(page.locator("#fact-form .field-error")).to_be_visible()
    await expect(page.locator("#fact-form")).to_contain_text("Please correct")
    assert await page.locator("[data-fact=preferred_colour]").count() == 0

    await page.fill("#fact-name", "preferred_colour")
    await page.fill("#fact-value", "blue")
    await page.select_option("#fact-verified", "agent")
    await page.select_option("#fact-channel", "phone")
    await page.select_option("#fact-expires", "30d")
    await page.fill("#fact-agent", "agent-9")
    await page.click("#fact-form button[type=submit]")
    await expect(page.locator("#fact-form [role=status]")).to_contain_text(
        "Recorded preferred_colour"
    )
    row = page.locator("[data-fact=preferred_colour]")
    await expect(row).to_contain_text("blue")  # arrived through the live stream
    await expect(row).to_contain_text("agent-9")
    await expect(page.locator("#fact-name")).to_have_value("")  # ready for the next one


async def test_masking_and_an_audited_reveal_for_admins_only(stack: Stack, page: Page, context):
    # an agent's key (context:read only): masked, and no reveal button
    _, phone = await handed_off(page, stack, stack.a_agent)
    fact = page.locator("[data-fact=card_last4]")
    await expect(fact).to_contain_text("••••")
    # the value nowhere as a value of its own (a port such as 42428 or a hex id may hold it)
    assert not stands_alone("4242", await page.content())
    assert await page.get_by_role("button", name="Reveal sensitive values (audited)").count() == 0

    # an admin reveals; the audit log records who saw which customer
    await context.clear_cookies()
    await sign_in(page, stack.journey.url, stack.a.key)
    await screen_pop(page, stack, phone)
    customer = await page.locator("[data-customer]").first.get_attribute("data-customer")
    await page.get_by_role("button", name="Reveal sensitive values (audited)").click()
    await expect(page.locator("[data-fact=card_last4]")).to_contain_text("4242")
    async with stack.db.session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT actor, detail FROM auth.audit_log WHERE tenant_id = :t "
                    "AND action = 'context.sensitive_revealed' AND target = :c"
                ),
                {"t": stack.a.id, "c": customer},
            )
        ).all()
    assert len(rows) == 1
    assert rows[0].detail == {"via": "pages"}


async def test_the_card_is_usable_in_a_400px_side_panel(stack: Stack, page: Page):
    await page.set_viewport_size({"width": 400, "height": 900})
    await sign_in(page, stack.journey.url, stack.a.key)
    await page.goto(
        f"{stack.journey.url}/app/agent?identifier_type=phone&value={quote(stack.demo_phone)}"
    )
    await expect(page.locator("[data-section=summary]")).to_be_visible()
    # nothing wider than the panel: no horizontal scrolling of the page
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 400, f"the page is {scroll_width}px wide in a 400px panel"
    for section in ("summary", "facts", "timeline", "route"):
        box = await page.locator(f"[data-section={section}]").first.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 400
    await expect(page.locator("#fact-form button[type=submit]")).to_be_visible()
    await screenshot(page, "agent-card-400px.png")


async def test_tenant_b_cannot_see_tenant_a(stack: Stack, page: Page):
    # tenant A's demo customer, by id
    await sign_in(page, stack.journey.url, stack.a.key)
    await page.goto(
        f"{stack.journey.url}/app/agent?identifier_type=phone&value={quote(stack.demo_phone)}"
    )
    customer = await page.locator("[data-customer]").first.get_attribute("data-customer")
    assert customer

    await page.context.clear_cookies()
    await sign_in(page, stack.journey.url, stack.b.key)
    response = await page.goto(
        f"{stack.journey.url}/app/agent?identifier_type=phone&value={quote(stack.demo_phone)}"
    )
    assert response is not None
    assert response.status == 404
    await expect(page.get_by_role("status")).to_contain_text("no customer")
    for path in (f"/app/agent/customers/{customer}", f"/app/agent/customers/{customer}/live"):
        response = await page.goto(stack.journey.url + path)
        assert response is not None, path
        assert response.status == 404, path
    assert "data-customer" not in await page.content()
