"""Fixtures for the alerts tests: settings with fresh consumer groups, a movable clock, a real
local HTTP receiver, running worker / notifier tasks, and activity factories."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from services.alerts.config import AlertsSettings
from services.alerts.engine import Effects, process_activities
from shared.db import Database, raw_connection
from shared.events.activity import CustomerActivity


class Clock:
    """The engine's clock: real time shifted by ``offset`` (tests move it forward)."""

    def __init__(self, at: datetime | None = None):
        self.now = at or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at


@pytest.fixture
def alerts_settings(settings_overrides: dict[str, Any]) -> AlertsSettings:
    return AlertsSettings(
        **settings_overrides,
        consumer_group=f"alerts-test-{uuid.uuid4().hex[:8]}",
        consumer_session_timeout_ms=6000,
        notifier_poll_seconds=0.5,
        retry_base_seconds=0.2,
        retry_max_seconds=1.0,
        delivery_timeout_seconds=5.0,
        default_owner="cs-team",
        egress_allow="127.0.0.1",  # the local receivers (pytest-httpserver, aiosmtpd)
    )


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@asynccontextmanager
async def running(
    target: Callable[..., Awaitable[None]], settings: AlertsSettings, **kwargs: Any
) -> AsyncIterator[asyncio.Event]:
    """Run a service process (``worker.run``, ``notifier.run`` …) as a task for the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(target(settings, stop=stop, **kwargs))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def activity(
    *,
    tenant: str,
    customer: str,
    type: str,  # noqa: A002
    at: datetime,
    account: str | None = None,
    traits: dict[str, Any] | None = None,
    **data: Any,
) -> CustomerActivity:
    event = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "tests",
        "type": type,
        "time": at.isoformat(),
        "tenant": tenant,
        "data": {"identifiers": [{"type": "crm_id", "value": customer}], **data},
    }
    return CustomerActivity(
        tenant=tenant,
        customer_id=customer,
        account_id=account,
        occurred_at=at,
        event=event,
        traits=traits or {},
    )


def usage(
    *, tenant: str, customer: str, at: datetime, active: int, purchased: int = 10, **kw: Any
) -> CustomerActivity:
    return activity(
        tenant=tenant,
        customer=customer,
        type="product.used",
        at=at,
        feature="reports",
        active_seats=active,
        purchased_seats=purchased,
        **kw,
    )


async def apply(
    db: Database, activities: list[CustomerActivity], *, now: datetime, owner: str = "cs-team"
) -> Effects:
    """Run the engine directly (no broker) in one transaction, like one consumer batch."""
    async with db.session() as session:
        conn = await raw_connection(session)
        return await process_activities(conn, activities, now=now, default_owner=owner)


WEBHOOK_SECRET = "s3cret-for-tests-0123456789"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=120)
