"""Browser tests: Debian's Chromium driven by Playwright, against the real stack.

One session starts the ingest, journey (and its engagement consumer) and alerts workers (real
Kafka-protocol broker, real PostgreSQL) and serves the journey and alerts apps under uvicorn on
free ports (real HTTP, real SSE), seeds the simulator's demo for one tenant through the raw
topic, and launches one browser.
Each test gets a fresh browser context (its own cookies) whose console errors, page errors and
CSP violations fail the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from services.alerts.app import create_app as create_alerts_app
from services.alerts.config import AlertsSettings
from services.alerts.worker import run as run_alerts
from services.ingest.config import IngestSettings
from services.ingest.worker import run as run_ingest
from services.journey.app import create_app as create_journey_app
from services.journey.context.engagement import run as run_engagement
from services.journey.maps.compactor import run as run_maps
from services.journey.worker import run as run_journey
from services.simulator.generator import generate_keyed
from services.simulator.producer import send as send_records
from services.simulator.records import plan
from shared.db import Database
from shared.embedded import free_port
from tests.journey.conftest import journey_settings_for
from tests.support import TenantFactory, TestTenant, eventually

ROOT = Path(__file__).resolve().parents[2]
DEMO_CUSTOMERS = 40
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download is not reachable here)."""
    wanted = os.environ.get("WAYPOINT_CHROMIUM")
    for candidate in ([wanted] if wanted else []) + list(CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    pytest.fail(
        "the browser tests need Chromium and found none: install Debian's package "
        "(`sudo apt-get install -y chromium`; .ci/run does this in CI) or point "
        "WAYPOINT_CHROMIUM at a Chromium/Chrome binary",
        pytrace=False,
    )


@dataclass
class Server:
    app: FastAPI
    port: int
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def serve(app: FastAPI) -> Server:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server, task), timeout=60)
    return Server(app, port, server, task)


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # raise what stopped it
    return server.started


@dataclass
class Stack:
    journey: Server
    alerts: Server
    producer: AIOKafkaProducer
    raw_topic: str
    db: Database
    a: TestTenant  # the demo's tenant: admin key (every scope)
    a_agent: str  # tenant A, context:read only
    b: TestTenant  # another tenant, admin key
    demo_phone: str
    extra: dict[str, Any] = field(default_factory=dict)

    async def send(self, *events: dict[str, Any]) -> None:
        """Through the raw topic, as channel systems send (ingest validates, journey applies)."""
        for event in events:
            key = f"{event['tenant']}|{event['data']['identifiers'][0]['value']}"
            await self.producer.send_and_wait(self.raw_topic, orjson.dumps(event), key=key.encode())


@pytest.fixture(scope="session")
async def stack(
    settings_overrides: dict[str, Any], db: Database, producer: AIOKafkaProducer
) -> AsyncIterator[Stack]:
    chromium_path()  # fail early, before starting anything, when there is no browser
    run = uuid.uuid4().hex[:8]
    overrides = {**settings_overrides, "log_level": "WARNING"}
    journey_settings = journey_settings_for(overrides, context_cache_mb=16)
    ingest_settings = IngestSettings(
        **{**overrides, "consumer_group": f"ingest-pages-{run}", "session_timeout_ms": 6000}
    )
    alerts_settings = AlertsSettings(
        **overrides, consumer_group=f"alerts-pages-{run}", consumer_session_timeout_ms=6000
    )
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(run_ingest(ingest_settings, stop=stop)),
        asyncio.create_task(run_journey(journey_settings, stop=stop)),
        asyncio.create_task(run_maps(journey_settings, stop=stop)),
        asyncio.create_task(run_engagement(journey_settings, stop=stop)),
        asyncio.create_task(run_alerts(alerts_settings, stop=stop)),
    ]
    journey = await serve(create_journey_app(journey_settings))
    alerts = await serve(create_alerts_app(alerts_settings))
    tenants = TenantFactory(db)
    a = await tenants()
    b = await tenants()
    a_agent = await tenants.key(a, scopes=["context:read"])
    stack = Stack(
        journey=journey,
        alerts=alerts,
        producer=producer,
        raw_topic=ingest_settings.topic_raw,
        db=db,
        a=a,
        a_agent=a_agent,
        b=b,
        demo_phone="",
    )
    try:
        await seed_demo(stack)
        yield stack
    finally:
        for server in (journey, alerts):
            server.server.should_exit = True
        await asyncio.gather(journey.task, alerts.task, return_exceptions=True)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 60)


async def seed_demo(stack: Stack) -> None:
    """The simulator's demo for tenant A, through ingest; wait until journey and alerts have it."""
    keyed = list(generate_keyed(customers=DEMO_CUSTOMERS, seed=42, tenant=stack.a.id))
    records = plan(keyed, seed=42, tenant=stack.a.id)
    await send_records(stack.producer, stack.raw_topic, records)
    phones = [
        i["value"]
        for _, e in keyed
        for i in e["data"]["identifiers"]
        if i["type"] == "phone" and e["type"] == "ivr.step"
    ]
    stack.demo_phone = phones[0]
    ids = list({e["id"] for _, e in keyed})

    async def applied() -> bool:
        # every event, not only the last sent: partitions are consumed in parallel
        async with stack.db.session() as session:
            from sqlalchemy import text

            found = await session.execute(
                text(
                    "SELECT count(*) FROM journey.event"
                    " WHERE tenant_id = :t AND event_id = ANY(:ids)"
                ),
                {"t": stack.a.id, "ids": ids},
            )
            return found.scalar_one() == len(ids)

    await eventually(applied, timeout=120, interval=0.5)


@pytest.fixture(scope="session")
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@dataclass
class Problems:
    """What a page must never produce: console errors, uncaught errors, CSP violations, and
    failed loads of scripts, styles, images or fetches. (A document answered with a 4xx on
    purpose, like a refused sign-in, is not a problem; Chromium logs it as "Failed to load
    resource", so those lines are judged by the response below instead.)"""

    items: list[str] = field(default_factory=list)
    allowed: list[tuple[str, int]] = field(default_factory=list)  # what a test expects to fail

    def allow(self, url_part: str, status: int) -> None:
        self.allowed.append((url_part, status))

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.items.append(f"console.error: {message.text} at {message.location}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            if (response.status, True) not in {
                (status, part in response.url) for part, status in self.allowed
            }:
                self.items.append(f"{response.status} for {response.url}")

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.items.append(f"page error: {e}"))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        # leaving a page aborts its open live stream: that is not a failure
        if request.failure != "net::ERR_ABORTED":
            self.items.append(f"failed: {request.url} {request.failure}")


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def problems(context: BrowserContext) -> AsyncIterator[Problems]:
    found = Problems()
    context.on("page", found.watch)
    # CSP violations are reported to the page as events; collect them on every page.
    await context.add_init_script(
        "document.addEventListener('securitypolicyviolation', function (e) {"
        " console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI); });"
    )
    yield found
    assert not found.items, "the pages logged errors:\n" + "\n".join(found.items)


@pytest.fixture
async def page(context: BrowserContext, problems: Problems) -> Page:
    return await context.new_page()


def screenshots_dir() -> Path | None:
    """``WAYPOINT_SCREENSHOTS=docs/images`` refreshes the README's screenshots."""
    target = os.environ.get("WAYPOINT_SCREENSHOTS")
    if not target:
        return None
    path = (ROOT / target).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    target = screenshots_dir()
    if target is not None:
        await page.screenshot(path=str(target / name), full_page=full_page)


async def sign_in(page: Page, base: str, key: str, next_path: str = "") -> None:
    await page.goto(f"{base}/app/sign-in" + (f"?next={next_path}" if next_path else ""))
    await page.fill("#key", key)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
