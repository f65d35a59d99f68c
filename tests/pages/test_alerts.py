"""The alert inbox in a real browser: by owner and severity, an explained alert, acknowledge,
add a note, resolve; scopes and tenant isolation."""

from __future__ import annotations

from playwright.async_api import Page, expect
from sqlalchemy import text

from tests.pages.conftest import Stack, screenshot, sign_in
from tests.support import eventually


async def open_alert(stack: Stack) -> dict:
    """An open alert of the demo tenant with a scored history (alerts follow journey)."""

    async def find() -> dict | None:
        async with stack.db.session() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT a.id, a.owner, a.customer_id FROM alerts.alert a "
                        "WHERE a.tenant_id = :t AND a.status = 'open' AND (SELECT count(*) "
                        "FROM alerts.score_history h WHERE h.tenant_id = a.tenant_id "
                        "AND h.customer_id = a.customer_id) >= 2 "
                        "ORDER BY a.opened_at, a.id LIMIT 1"
                    ),
                    {"t": stack.a.id},
                )
            ).first()
        return dict(row._mapping) if row else None

    return await eventually(find, timeout=90, interval=0.5)


async def test_acknowledge_note_and_resolve_an_explained_alert(stack: Stack, page: Page):
    alert = await open_alert(stack)
    await sign_in(page, stack.alerts.url, stack.a.key)
    await page.goto(f"{stack.alerts.url}/app/alerts?owner={alert['owner']}")
    rows = page.locator("[data-alert]")
    await expect(rows.first).to_be_visible()
    # grouped by owner: only this owner's alerts, each with a severity
    owners = await page.locator("[data-owner]").evaluate_all("els => els.map(e => e.dataset.owner)")
    assert owners == [alert["owner"]]
    assert await page.locator("[data-alert] .badge").count() == await rows.count()

    await page.locator(f"[data-alert='{alert['id']}'] a").click()  # htmx: the detail beside
    detail = page.locator(f"[data-alert-detail='{alert['id']}']")
    await expect(detail).to_be_visible()
    await expect(detail).to_contain_text("Engagement")  # the explanation's summary
    await expect(detail.locator("[data-field=score]")).to_be_visible()
    assert await detail.locator("svg rect.bar").count() >= 3  # one bar per factor
    await expect(detail.locator("svg polyline.line")).to_be_attached()  # engagement history
    assert "/app/alerts?" in page.url  # a fragment swap, not a navigation
    await screenshot(page, "alert-inbox.png", full_page=False)

    await detail.locator("textarea").fill("Called the CSM, renewal meeting booked.")
    await detail.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#alert-detail [role=status]")).to_have_text("Acknowledged.")
    await expect(page.locator("#alert-detail")).to_contain_text("renewal meeting booked")
    await expect(page.locator("[data-alert-detail]")).to_have_attribute(
        "data-status", "acknowledged"
    )

    await page.locator("#alert-detail textarea").fill("Second call went well.")
    await page.locator("#alert-detail").get_by_role("button", name="Add note").click()
    await expect(page.locator("#alert-detail [role=status]")).to_have_text("Note added.")
    await page.locator("#alert-detail").get_by_role("button", name="Resolve").click()
    await expect(page.locator("[data-alert-detail]")).to_have_attribute("data-status", "resolved")

    async with stack.db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT status, acknowledged_by, resolved_by, notes FROM alerts.alert "
                    "WHERE tenant_id = :t AND id = :id"
                ),
                {"t": stack.a.id, "id": alert["id"]},
            )
        ).one()
    assert row.status == "resolved"
    assert row.acknowledged_by.startswith("key:")
    assert row.resolved_by.startswith("key:")
    notes = row.notes if isinstance(row.notes, list) else __import__("json").loads(row.notes)
    assert [n["text"] for n in notes] == [
        "Called the CSM, renewal meeting booked.",
        "Second call went well.",
    ]


async def test_severity_filter_and_scopes(stack: Stack, page: Page, context):
    await open_alert(stack)
    await sign_in(page, stack.alerts.url, stack.a.key)
    await page.goto(f"{stack.alerts.url}/app/alerts")
    every = [b.strip().lower() for b in await page.locator("[data-alert] .badge").all_inner_texts()]
    assert every
    assert set(every) <= {"high", "medium", "low"}
    chosen = every[-1]
    await page.select_option("#a-severity", chosen)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Show").click()
    badges = [
        b.strip().lower() for b in await page.locator("[data-alert] .badge").all_inner_texts()
    ]
    assert badges == [chosen] * every.count(chosen)

    # an agent's key (context:read only) may not read alerts: the page says so
    await context.clear_cookies()
    await sign_in(page, stack.journey.url, stack.a_agent)
    response = await page.goto(f"{stack.alerts.url}/app/alerts")
    assert response is not None
    assert response.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("alerts:read")


async def test_tenant_b_cannot_see_or_act_on_tenant_a_alerts(stack: Stack, page: Page, context):
    alert = await open_alert(stack)
    await sign_in(page, stack.alerts.url, stack.b.key)
    await page.goto(f"{stack.alerts.url}/app/alerts")
    await expect(page.locator("#list-title")).to_contain_text("0 open alerts")
    response = await page.goto(f"{stack.alerts.url}/app/alerts/{alert['id']}")
    assert response is not None
    assert response.status == 404
    # nor act on it, with a valid session and CSRF token of tenant B
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    await page.goto(f"{stack.alerts.url}/app/alerts")
    csrf = await page.locator("input[name=csrf_token]").first.input_value()
    import httpx

    async with httpx.AsyncClient(base_url=stack.alerts.url, cookies=cookies) as client:
        r = await client.post(f"/app/alerts/{alert['id']}/ack", data={"csrf_token": csrf})
    assert r.status_code == 404
    async with stack.db.session() as session:
        status = (
            await session.execute(
                text("SELECT status FROM alerts.alert WHERE id = :id"), {"id": alert["id"]}
            )
        ).scalar_one()
    assert status == "open"
