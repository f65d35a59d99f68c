"""The journey map's quality sections in a real browser, on the simulator's demo (tenant A):
pain points (and the nodes they colour), FCR with its window selector, experience, conformance
with its designed-journey selector and the health summary show the figures the API gives for the
same range and moment (the page shows both), without console errors or CSP violations. Each
panel loads when it is first shown, and the map's refresh re-reads only the panels on screen."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.async_api import Page, expect

from services.journey.pages.map_quality import PAIN_COLOURED
from tests.pages.conftest import Stack
from tests.pages.test_map import graph, open_map, until


async def api(stack: Stack, path: str, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.journey.url, timeout=30) as client:
        response = await client.get(
            path, params=params, headers={"Authorization": f"Bearer {stack.a.key}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def section_range(page: Page, name: str) -> dict[str, str]:
    section = page.locator(f"[data-quality={name}]")
    return {
        "from": await section.get_attribute("data-from") or "",
        "to": await section.get_attribute("data-to") or "",
        "as_of": await section.get_attribute("data-as-of") or "",
    }


async def show(page: Page, name: str) -> None:
    """Scroll a quality panel into view (it loads when shown) and wait for its section."""
    await expect(page.locator(f"#quality-{name}")).to_have_count(1)
    # scrolled by the page (a placeholder being swapped for its section is not "stable")
    await page.evaluate(f"document.getElementById('quality-{name}').scrollIntoView()")
    await expect(page.locator(f"[data-quality={name}]")).to_be_visible()


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


async def test_pain_points_table_and_colour_match_the_api(stack: Stack, page: Page):
    await open_map(page, stack, stack.a.key)
    await show(page, "pain_points")
    r = await section_range(page, "pain_points")
    expected = await api(stack, "/v1/pain-points", **r)
    assert expected["pain_points"], "the demo has pain points"
    shown = await page.evaluate(
        """() => [...document.querySelectorAll('tr[data-pain]')].map(tr => ({
            id: tr.dataset.pain,
            cells: [...tr.querySelectorAll('td')].map(td => td.textContent.trim())}))"""
    )
    assert [row["id"] for row in shown] == [
        f"{p['kind']}|{p['key']}" for p in expected["pain_points"]
    ]
    for row, p in zip(shown, expected["pain_points"], strict=True):
        assert row["cells"][2:5] == [str(p["affected"]), str(p["base"]), pct(p["rate"])]
        assert float(row["cells"][6]) == p["impact"]

    # the graph's red nodes: those with the most impact over all the API's pain points
    everything = await api(stack, "/v1/pain-points", limit="500", **r)
    impact: dict[str, float] = defaultdict(float)
    for p in everything["pain_points"]:
        impact[p["key"]] += p["impact"]  # touchpoint granularity: a key is a node
    drawn = await graph(page)
    top = sorted((n for n in impact if n in drawn["nodes"]), key=lambda n: (-impact[n], n))
    red = {n for n, v in drawn["nodes"].items() if v["pain"] == "yes"}
    assert red == set(top[:PAIN_COLOURED])
    await expect(page.locator("tr.pain[data-node]")).to_have_count(len(red))


async def test_fcr_window_selector_switches_and_matches_the_api(stack: Stack, page: Page):
    await open_map(page, stack, stack.a.key)
    await show(page, "fcr")
    section = page.locator("[data-quality=fcr]")
    await expect(section).to_have_attribute("data-window", "7d")
    for window in ("7d", "30d", "1d"):
        if window != "7d":
            await page.locator("#f-fcr_window").select_option(window)
            await expect(section).to_have_attribute("data-window", window)
            assert parse_qs(urlsplit(page.url).query)["fcr_window"] == [window]
        r = await section_range(page, "fcr")
        expected = await api(stack, "/v1/fcr", by="reason", windows=window, **r)
        total = expected["total"]
        assert total["contacts"] > 0
        chosen = next(w for w in total["windows"] if w["window"] == window)
        row = section.locator("tr[data-fcr=total] td")
        cells = [c.strip() for c in await row.all_inner_texts()]
        assert cells[1:5] == [
            str(total["contacts"]),
            str(chosen["judged"]),
            pct(chosen["still_open_share"]),
            pct(chosen["fcr_rate"]),
        ]
        await expect(section.locator("thead")).to_contain_text(f"FCR {window}")
        groups = await section.locator("tr[data-fcr]").count()
        assert groups == 1 + len(expected["groups"])
    # the choice survives the filters form and a reload
    before = await page.evaluate("window.waypointMap.draws")
    await page.get_by_role("button", name="Apply").click()
    await until(page, f"window.waypointMap.draws > {before}")
    await show(page, "fcr")
    await expect(section).to_have_attribute("data-window", "1d")
    await page.reload()
    await show(page, "fcr")
    await expect(page.locator("#f-fcr_window")).to_have_value("1d")


async def test_experience_and_health_match_the_api(stack: Stack, page: Page):
    await open_map(page, stack, stack.a.key, "?granularity=channel")
    expected = await api(stack, "/v1/experience", granularity="channel", journey="episode")
    assert expected["touchpoints"], "the demo's surveys are tied to steps"
    await show(page, "experience")
    section = page.locator("[data-quality=experience]")
    rows = section.locator("table[data-table=experience-touchpoints] tbody tr")
    await expect(rows).to_have_count(len(expected["touchpoints"]))
    for i, want in enumerate(expected["touchpoints"]):
        cells = [c.strip() for c in await rows.nth(i).locator("td").all_inner_texts()]
        assert cells[0] == want["node"]
        assert cells[4] == str(want["responses"])
        if want.get("csat"):
            assert cells[1] == str(want["csat"]["mean"])
    moments = section.locator("[data-moment]")
    await expect(moments).to_have_count(len(expected["moments_of_truth"]))

    await show(page, "pain_points")
    await show(page, "health")
    r = await section_range(page, "pain_points")
    health = await api(stack, "/v1/journey-health", **r)
    contacts = page.locator("[data-quality=health] tr[data-figure=contacts] td")
    cells = [c.strip() for c in await contacts.all_inner_texts()]
    assert cells[1:3] == [str(health["contacts"]["value"]), str(health["contacts"]["previous"])]
    fcr_row = page.locator("[data-quality=health] tr[data-figure='FCR (policy window)'] td")
    assert (await fcr_row.nth(1).inner_text()).strip() == pct(health["fcr"]["value"])


async def test_conformance_shows_the_chosen_design(stack: Stack, page: Page):
    await open_map(page, stack, stack.a.key, "?granularity=channel")
    assert await page.locator("[data-quality=conformance]").count() == 0  # no design yet
    # two designs from the demo's most frequent channel paths
    paths = await page.evaluate(
        """() => [...document.querySelectorAll(
              'table[data-table=variants] tbody tr td:first-child')]
              .map(td => td.textContent.split(' → ').map(s => s.trim()))"""
    )
    designs = {
        "demo-main": list(dict.fromkeys(paths[0]))[:3],
        "demo-other": list(dict.fromkeys(p for path in paths[1:] for p in path))[:2],
    }
    async with httpx.AsyncClient(base_url=stack.journey.url, timeout=30) as client:
        for name, steps in designs.items():
            response = await client.put(
                f"/v1/designed-journeys/{name}",
                json={"granularity": "channel", "steps": [{"activity": s} for s in steps]},
                headers={"Authorization": f"Bearer {stack.a.key}"},
            )
            assert response.status_code == 200, response.text
    try:
        await page.reload()
        await show(page, "conformance")
        section = page.locator("[data-quality=conformance]")
        await expect(section).to_have_attribute("data-design", "demo-main")  # the first
        for name in ("demo-main", "demo-other"):
            if name != "demo-main":
                await page.locator("#f-design").select_option(name)
                await expect(section).to_have_attribute("data-design", name)
                assert parse_qs(urlsplit(page.url).query)["design"] == [name]
            expected = await api(stack, f"/v1/designed-journeys/{name}/conformance")
            assert expected["journeys"] > 0
            figure = section.locator("[data-figure=journeys]")
            await expect(figure).to_have_text(str(expected["journeys"]))
            await expect(section.locator("[data-figure=conforming]")).to_contain_text(
                f"{expected['conforming']} ({pct(expected['conforming_share'])})"
            )
            await expect(section.locator("[data-figure=mean_fitness]")).to_have_text(
                f"{expected['fitness']['mean']:.3f}"
            )
            await expect(section.locator("tr[data-deviation]")).to_have_count(
                len(expected["deviations"])
            )
    finally:  # the session's other tests see tenant A without designs
        async with httpx.AsyncClient(base_url=stack.journey.url, timeout=30) as client:
            for name in designs:
                await client.delete(
                    f"/v1/designed-journeys/{name}",
                    headers={"Authorization": f"Bearer {stack.a.key}"},
                )


async def test_panels_load_when_shown_and_only_those_on_screen_are_re_read(
    stack: Stack, page: Page
):
    await page.set_viewport_size({"width": 1280, "height": 500})
    await page.clock.install()  # the refresh beat is 30 s: the test moves the page's clock on
    await open_map(page, stack, stack.a.key)
    # every panel request, as htmx issues it (synchronously, on the beat's timer)
    await page.evaluate(
        """() => { window.panelReads = [];
            document.body.addEventListener('htmx:beforeRequest', e => {
                const panel = e.detail.elt.closest('.quality-panel');
                if (panel) { window.panelReads.push(panel.dataset.panel); } }); }"""
    )
    await expect(page.locator("#quality-health")).to_have_count(1)
    assert await page.locator("[data-quality=health]").count() == 0  # below the map: not read
    await show(page, "fcr")
    await show(page, "health")  # the bottom of the page: FCR is off screen now
    assert (await page.evaluate("window.panelReads")).count("health") == 1
    on_screen = await page.evaluate(
        """() => [...document.querySelectorAll('.quality-panel[data-loaded]')]
            .filter(el => { const b = el.getBoundingClientRect();
                            return b.bottom > 0 && b.top < window.innerHeight; })
            .map(el => el.dataset.panel)"""
    )
    loaded = await page.evaluate(
        "() => [...document.querySelectorAll('.quality-panel[data-loaded]')]"
        ".map(el => el.dataset.panel)"
    )
    assert "health" in on_screen
    assert "fcr" in loaded
    assert "fcr" not in on_screen
    await page.evaluate("() => { window.panelReads = []; }")
    await page.clock.fast_forward(31_000)  # fires the beat's timers (their requests may follow)
    await page.wait_for_function(  # a condition, not a sleep: the on-screen panels are re-read
        "want => JSON.stringify([...window.panelReads].sort()) === JSON.stringify(want)",
        arg=sorted(on_screen),
        timeout=10_000,
    )
    assert not set(await page.evaluate("window.panelReads")) - set(on_screen)  # and only those
    await expect(page.locator("[data-quality=health]")).to_be_visible()  # re-read, shown again
