"""Sign-in, sessions, sign-out, cookie flags, security headers and CSRF, in a real browser."""

from __future__ import annotations

import httpx
from playwright.async_api import BrowserContext, Page, expect

from tests.pages.conftest import Stack, sign_in


async def test_sign_in_with_a_key_then_sign_out(stack: Stack, page: Page, context: BrowserContext):
    base = stack.journey.url
    await page.goto(f"{base}/app/agent?identifier_type=phone&value={stack.demo_phone}")
    # not signed in: the sign-in page, remembering where to go back to
    await expect(page.locator("h1")).to_have_text("Sign in")
    assert "/app/sign-in?next=" in page.url

    await page.fill("#key", "wp_not-a-real-key")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("not valid")

    await page.fill("#key", stack.a.key)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    # back on the screen pop it asked for; the key is in no URL of the history
    assert page.url.startswith(f"{base}/app/agent?identifier_type=phone")
    await expect(page.locator("[data-section=summary]")).to_be_visible()
    history = await page.evaluate("window.history.length")
    assert history >= 1
    assert stack.a.key not in page.url

    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["waypoint_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # plain http in the test; Secure behind HTTPS (below)
    assert session["expires"] > 0  # expiring, not a browser-lifetime cookie
    assert stack.a.key not in session["value"]

    # the alerts service (another port, same host) honours the same server-side session
    await page.goto(f"{stack.alerts.url}/app/alerts")
    await expect(page.locator("h1")).to_have_text("Churn alerts")

    await page.goto(f"{base}/app/agent")
    async with page.expect_navigation():
        await page.click("text=Sign out")
    await expect(page.locator("h1")).to_have_text("Sign in")
    # the old cookie is dead on the server, not only deleted in this browser
    async with httpx.AsyncClient(
        base_url=base, cookies={"waypoint_session": session["value"]}
    ) as client:
        r = await client.get("/app/agent")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/app/sign-in")


async def test_pages_carry_a_strict_csp_and_never_cache(stack: Stack, page: Page):
    await sign_in(page, stack.journey.url, stack.a.key)
    response = await page.goto(f"{stack.journey.url}/app/agent")
    assert response is not None
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    # no inline script or style in the markup itself
    html = await page.content()
    assert "<script>" not in html
    assert " style=" not in html
    assert "<style" not in html


async def test_behind_https_the_cookie_is_secure_and_host_bound(stack: Stack):
    https = {"X-Forwarded-Proto": "https"}
    async with httpx.AsyncClient(base_url=stack.journey.url) as client:
        form = await client.get("/app/sign-in", headers=https)
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.cookies.set("waypoint_signin", token)
        r = await client.post(
            "/app/sign-in",
            data={"key": stack.a.key, "csrf_token": token, "next": "/app/agent"},
            headers=https,
        )
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-waypoint_session=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/", "Max-Age="):
        assert flag.lower() in cookie.lower(), cookie


async def test_forms_without_the_csrf_token_are_refused(stack: Stack, page: Page, context):
    await sign_in(page, stack.journey.url, stack.a.key)
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    async with httpx.AsyncClient(base_url=stack.journey.url, cookies=cookies) as client:
        r = await client.post("/app/sign-out", data={})
        assert r.status_code == 403
        assert "CSRF" in r.text
        # and sign-in itself needs its double-submit token
        r = await client.post("/app/sign-in", data={"key": stack.a.key})
        assert r.status_code == 403
    # the session survived the forged sign-out
    await page.goto(f"{stack.journey.url}/app/agent")
    await expect(page.locator("#identifier_type")).to_be_visible()
