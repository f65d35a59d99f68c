"""The journey map page in a real browser, on the simulator's demo (tenant A) folded into the
map by the journey worker: filters change the graph, a node focuses the tactical view, an edge
drills down to its journeys and on to a customer's timeline, exports download, the page
refreshes itself, tenant B sees none of A's map, and analytics:read is needed."""

from __future__ import annotations

import csv
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from playwright.async_api import Page, expect

from services.journey.maps.activities import STAGES
from services.journey.maps.export import COLUMNS
from shared.db import raw_connection
from tests.pages.conftest import Stack, screenshot, sign_in
from tests.support import cloud_event, eventually

XES = "{http://www.xes-standard.org/}"


async def map_settled(stack: Stack, tenant: str, *, events: Sequence[str] = ()) -> None:
    """Wait until the given events are applied and the tenant's map has folded everything."""

    async def done() -> bool:
        async with stack.db.session() as session:
            conn = await raw_connection(session)
            applied = await conn.fetchval(
                "SELECT count(*) FROM journey.event WHERE tenant_id = $1 AND event_id = ANY($2)",
                tenant,
                list(events),
            )
            waiting = await conn.fetchval(
                "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
            )
        return applied == len(events) and waiting == 0

    await eventually(done, timeout=60, interval=0.2)


async def open_map(page: Page, stack: Stack, key: str, query: str = "") -> None:
    await map_settled(stack, stack.a.id)
    await sign_in(page, stack.journey.url, key, next_path=quote("/app/map" + query, safe="/"))
    await expect(page.locator("h1")).to_have_text("Journey map")
    await until(page, "window.waypointMap && window.waypointMap.cy !== null")


async def graph(page: Page) -> dict[str, Any]:
    """What the browser drew: node ids with size, edges with width and label."""
    drawn: dict[str, Any] = await page.evaluate(
        """() => {
            const cy = window.waypointMap.cy;
            return {
              journeys: window.waypointMap.data.journeys,
              nodes: Object.fromEntries(cy.nodes().map(n => [n.id(),
                  {count: n.data('count'), size: n.data('size'), pain: n.data('pain')}])),
              edges: Object.fromEntries(cy.edges().map(e => [
                  e.source().id() + '>' + e.target().id(),
                  {count: e.data('count'), width: e.data('width'), label: e.data('label')}])),
            };
        }"""
    )
    return drawn


async def rows_of(page: Page, kind: str) -> dict[str, int]:
    """The node or edge table as {id: count} (the count is the table's drill-down link)."""
    found: dict[str, int] = await page.evaluate(
        f"""() => Object.fromEntries([...document.querySelectorAll('tr[data-{kind}]')].map(
            tr => [tr.dataset.{kind}, Number(tr.querySelector('a').textContent)]))"""
    )
    return found


async def until(page: Page, expression: str, timeout: float = 15.0) -> None:
    """Poll ``expression`` in the page from here (the refresh test fakes the page's timers)."""

    async def holds() -> bool:
        return bool(await page.evaluate(expression))

    await eventually(holds, timeout=timeout, interval=0.1)


async def table_column(page: Page, table: str, column: int = 0) -> list[str]:
    cells = page.locator(f"table[data-table={table}] tbody tr td:nth-child({column + 1})")
    return [text.strip() for text in await cells.all_inner_texts()]


async def apply(page: Page, **choices: str) -> None:
    for name, value in choices.items():
        field = page.locator(f"#f-{name}")
        if await field.evaluate("el => el.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    before = await page.evaluate("window.waypointMap.draws")
    await page.get_by_role("button", name="Apply").click()
    await until(page, f"window.waypointMap.draws > {before}")


async def test_map_draws_the_demo_and_filters_change_the_graph(stack: Stack, page: Page):
    await open_map(page, stack, stack.a.key)
    touchpoints = await graph(page)
    assert touchpoints["journeys"] > 0
    assert len(touchpoints["nodes"]) >= 3
    assert touchpoints["edges"]
    # the tables carry the same numbers as the picture
    assert await rows_of(page, "node") == {n: v["count"] for n, v in touchpoints["nodes"].items()}
    assert await rows_of(page, "edge") == {e: v["count"] for e, v in touchpoints["edges"].items()}
    # node size follows volume, edge width follows count, edge labels carry count and time
    nodes = sorted(touchpoints["nodes"].values(), key=lambda n: n["count"])
    assert nodes[-1]["size"] > nodes[0]["size"] or nodes[-1]["count"] == nodes[0]["count"]
    edges = sorted(touchpoints["edges"].values(), key=lambda e: e["count"])
    assert edges[-1]["width"] >= edges[0]["width"]
    assert all(e["label"].startswith(f"{e['count']}") for e in edges)
    assert any(" · " in e["label"] for e in edges)  # count · median time

    await apply(page, granularity="channel")
    channels = await graph(page)
    assert all(":" not in node for node in channels["nodes"])
    assert len(channels["nodes"]) < len(touchpoints["nodes"])
    assert channels["journeys"] == touchpoints["journeys"]  # same journeys, coarser steps
    assert parse_qs(urlsplit(page.url).query)["granularity"] == ["channel"]
    await expect(page.locator("table[data-table=switches] tbody tr").first).not_to_contain_text(
        "No channel switches"
    )
    await page.wait_for_timeout(300)  # let the layout settle for the picture
    await screenshot(page, "journey-map.png", full_page=False)

    # a segment narrows the journeys (the demo's customers fall into several age groups)
    segments = [s for s in await page.locator("#f-segment option").all_inner_texts() if "=" in s]
    age_groups = [s for s in segments if s.startswith("age_group=")]
    assert len(age_groups) >= 2
    await apply(page, segment=age_groups[0])
    narrowed = await graph(page)
    assert 0 < narrowed["journeys"] < channels["journeys"]
    assert await page.locator("#f-segment").input_value() == age_groups[0]

    # a time range (whole UTC days, both ends inclusive): up to yesterday and from today split
    # the journeys between them; from tomorrow there are none
    today = datetime.now(UTC).date()
    await apply(page, segment="", to=(today - timedelta(days=1)).isoformat())
    until_yesterday = (await graph(page))["journeys"]
    await apply(page, to="", **{"from": today.isoformat()})
    from_today = (await graph(page))["journeys"]
    assert until_yesterday + from_today == channels["journeys"]
    tomorrow = (today + timedelta(days=1)).isoformat()
    await apply(page, **{"from": tomorrow})
    assert (await graph(page))["nodes"] == {}
    await expect(page.locator("table[data-table=nodes]")).to_contain_text("No steps")
    await page.reload()
    await expect(page.locator("#f-from")).to_have_value(tomorrow)
    await expect(page.locator("#f-granularity")).to_have_value("channel")
    await apply(page, **{"from": ""})

    # the strategic view is the map by stage
    await apply(page, view="strategic")
    await expect(page.locator("#f-granularity")).to_have_value("stage")
    assert set((await graph(page))["nodes"]) <= set(STAGES)

    # the customer-journey definition: fewer (longer) journeys than episodes
    await apply(page, view="performance", granularity="channel", journey="customer")
    assert (await graph(page))["journeys"] < channels["journeys"]

    # a click on a node focuses the tactical view on it
    busiest = max(channels["nodes"], key=lambda n: channels["nodes"][n]["count"])
    await apply(page, journey="episode")
    before = await page.evaluate("window.waypointMap.draws")
    await click_element(page, "node", busiest)
    await until(page, f"window.waypointMap.draws > {before}")
    await expect(page.locator("#f-view")).to_have_value("tactical")
    await expect(page.locator("#f-focus")).to_have_value(busiest)
    assert parse_qs(urlsplit(page.url).query)["focus"] == [busiest]
    await expect(page.locator(f"[data-focus='{busiest}']")).to_be_visible()
    focused = await graph(page)
    assert busiest in focused["nodes"]
    assert all(busiest in edge.split(">") for edge in focused["edges"])


async def click_element(page: Page, kind: str, name: str) -> None:
    """Click a cytoscape node (by id) or edge (``source>target``) where it is drawn."""
    point = await page.evaluate(
        """([kind, name]) => {
            const cy = window.waypointMap.cy;
            const el = kind === 'node' ? cy.getElementById(name)
                : cy.edges().filter(e => e.source().id() + '>' + e.target().id() === name)[0];
            const p = kind === 'node' ? el.renderedPosition() : el.renderedMidpoint();
            const box = cy.container().getBoundingClientRect();
            return {x: box.left + p.x, y: box.top + p.y};
        }""",
        [kind, name],
    )
    await page.mouse.click(point["x"], point["y"])


async def clear_edge(page: Page) -> str:
    """The busiest edge between two different nodes whose midpoint is clear of other edges'
    midpoints and of nodes (so a click there hits that edge)."""
    found: str | None = await page.evaluate(
        """() => {
            const cy = window.waypointMap.cy;
            const mid = (e) => e.renderedMidpoint();
            const edges = cy.edges().filter((e) => !e.isLoop())
              .sort((a, b) => b.data('count') - a.data('count'));
            for (const e of edges) {
              const m = mid(e);
              const crowded = cy.edges().some(
                (o) => o !== e && Math.hypot(mid(o).x - m.x, mid(o).y - m.y) < 20);
              const onNode = cy.nodes().some((n) => {
                const b = n.renderedBoundingBox();
                return m.x > b.x1 - 8 && m.x < b.x2 + 8 && m.y > b.y1 - 8 && m.y < b.y2 + 8;
              });
              if (!crowded && !onNode) { return e.source().id() + '>' + e.target().id(); }
            }
            return null;
        }"""
    )
    assert found, "no edge of the demo's map is clear enough to click"
    return found


async def test_an_edge_drills_down_to_its_journeys_and_a_customer_timeline(
    stack: Stack, page: Page
):
    await open_map(page, stack, stack.a.key, "?granularity=channel&view=performance")
    edge = await clear_edge(page)
    count = (await graph(page))["edges"][edge]["count"]
    await click_element(page, "edge", edge)
    await page.wait_for_url("**/app/map/journeys?**")
    assert parse_qs(urlsplit(page.url).query)["edge"] == [edge]
    assert parse_qs(urlsplit(page.url).query)["granularity"] == ["channel"]
    source, target = edge.split(">")
    await expect(page.locator("h1")).to_contain_text(f"{source} → {target}")
    paths = await table_column(page, "journeys", 3)
    assert 0 < len(paths) <= count
    for path in paths:  # every journey listed goes through the edge
        steps = path.split(" → ")
        assert any(a == source and b == target for a, b in zip(steps, steps[1:], strict=False))

    customer = page.locator("[data-customer]").first
    customer_id = await customer.get_attribute("data-customer")
    await customer.click()
    await page.wait_for_url(f"**/app/agent/customers/{customer_id}*")
    timeline = page.locator("[data-section=timeline] li")
    assert await timeline.count() > 0
    await expect(page.locator("[data-section=timeline]")).to_be_visible()

    # back to the map, filters kept
    await page.go_back()
    await page.get_by_role("link", name="← Back to the map").click()
    await expect(page.locator("#f-granularity")).to_have_value("channel")


async def test_export_buttons_download_the_filtered_steps_as_csv_and_xes(
    stack: Stack, page: Page, tmp_path: Path
):
    await open_map(page, stack, stack.a.key, "?granularity=channel")
    live = page.locator("#map-live")
    journeys = int(await live.get_attribute("data-journeys") or 0)
    steps = int(await live.get_attribute("data-steps") or 0)
    assert journeys > 0

    async with page.expect_download() as csv_download:
        await page.locator("[data-export=csv]").click()
    download = await csv_download.value
    assert download.suggested_filename == "journey-steps.csv"
    saved = tmp_path / "steps.csv"
    await download.save_as(saved)
    rows = list(csv.reader(io.StringIO(saved.read_text())))
    assert rows[0] == COLUMNS
    assert len(rows) - 1 == steps  # one row per step of the map shown
    assert len({r[0] for r in rows[1:]}) == journeys
    assert {r[1] for r in rows[1:]} == set(await rows_of(page, "node"))

    async with page.expect_download() as xes_download:
        await page.locator("[data-export=xes]").click()
    download = await xes_download.value
    assert download.suggested_filename == "journey-steps.xes"
    saved = tmp_path / "steps.xes"
    await download.save_as(saved)
    log = ET.parse(saved).getroot()
    traces = log.findall(f"{XES}trace")
    assert len(traces) == journeys
    assert sum(len(t.findall(f"{XES}event")) for t in traces) == steps


async def test_the_map_refreshes_itself_while_open(stack: Stack, page: Page):
    await page.clock.install()  # htmx polls every 30 s: the test moves the page's clock on
    await open_map(page, stack, stack.a.key)
    await page.evaluate("window.stillTheSamePage = true")
    run = uuid.uuid4().hex[:8]
    touchpoint = f"refresh_{run}"
    email = {"type": "email", "value": f"map-{run}@customer.test", "verified_by": "login"}
    at = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        cloud_event(tenant=stack.a.id, type="contact.started", time=at, channel="web_chat",
                    identifiers=[email], interaction_id=f"chat-{run}", touchpoint=touchpoint),
        cloud_event(tenant=stack.a.id, type="contact.started", time=at + timedelta(minutes=2),
                    channel="phone", identifiers=[email], interaction_id=f"call-{run}"),
    ]  # fmt: skip
    node = f"web_chat:{touchpoint}"
    before = await page.evaluate("window.waypointMap.data.journeys")
    assert await page.evaluate(f"window.waypointMap.cy.getElementById('{node}').length") == 0
    await stack.send(*events)
    await map_settled(stack, stack.a.id, events=[e["id"] for e in events])

    await page.clock.fast_forward(31_000)
    await until(page, f"window.waypointMap.cy.getElementById('{node}').length === 1")
    assert await page.evaluate("window.waypointMap.data.journeys") > before
    assert await page.evaluate("window.stillTheSamePage") is True  # no reload
    await expect(page.locator("table[data-table=edges]")).to_contain_text(node)


async def test_tenant_b_sees_none_of_tenant_a_map(stack: Stack, page: Page):
    # A's map, as A sees it: a customer and an edge to look for from B's side
    await open_map(page, stack, stack.a.key, "?granularity=channel")
    a_nodes = set((await graph(page))["nodes"])
    edge = next(iter((await graph(page))["edges"]))
    await page.goto(f"{stack.journey.url}/app/map/journeys?granularity=channel&edge={edge}")
    a_customer = await page.locator("[data-customer]").first.get_attribute("data-customer")
    await page.get_by_role("button", name="Sign out").click()

    await open_map(page, stack, stack.b.key, "?granularity=channel")
    seen = await graph(page)
    assert seen["journeys"] == 0
    assert not set(seen["nodes"]) & a_nodes
    await expect(page.locator("table[data-table=variants]")).to_contain_text("No journeys")
    assert await page.locator("#f-segment option").count() == 1  # A's segments are not offered

    await page.goto(f"{stack.journey.url}/app/map/journeys?granularity=channel&edge={edge}")
    await expect(page.locator("[data-empty]")).to_be_visible()
    assert await page.locator("[data-customer]").count() == 0

    response = await page.request.get(
        f"{stack.journey.url}/app/map/export?granularity=channel&format=csv"
    )
    assert response.status == 200
    assert (await response.text()).strip().splitlines() == [",".join(COLUMNS)]
    response = await page.goto(f"{stack.journey.url}/app/agent/customers/{a_customer}")
    assert response is not None
    assert response.status == 404


async def test_the_map_needs_the_analytics_scope(stack: Stack, page: Page):
    await sign_in(page, stack.journey.url, stack.a_agent)
    for path in ("/app/map", "/app/map/journeys?edge=a>b", "/app/map/export?format=csv"):
        response = await page.goto(f"{stack.journey.url}{path}")
        assert response is not None
        assert response.status == 403
        await expect(page.get_by_role("alert")).to_contain_text("analytics:read")


async def test_bad_filters_are_named(stack: Stack, page: Page):
    await sign_in(page, stack.journey.url, stack.a.key)
    for query, words in (
        ("?segment=shoe_size=9", "segment"),
        ("?from=2026-02-01&to=2026-01-01", "'from' must not be after 'to'"),
        ("?fcr_window=7x", "fcr_window"),
        ("?fcr_by=weather", "fcr_by"),
        ("?view=tactical&focus=no-such-node", "no node"),
    ):
        response = await page.goto(f"{stack.journey.url}/app/map{query}")
        assert response is not None
        if "focus" in query:  # a focus not on the map: the whole map, with a notice
            assert response.status == 200
            await expect(page.locator("[data-notice]")).to_contain_text(words)
        else:
            assert response.status == 422
            await expect(page.get_by_role("alert")).to_contain_text(words)
