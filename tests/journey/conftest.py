"""Journey fixtures: a worker on this session's normalized topic and the API on the same data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.journey.app import create_app
from services.journey.config import JourneySettings
from services.journey.maps.compactor import run as run_maps
from services.journey.worker import run
from shared.db import Database
from shared.events import validate_event
from tests.support import app_client, cloud_event, eventually


def journey_settings_for(overrides: dict[str, Any], **extra: Any) -> JourneySettings:
    return JourneySettings(
        **{
            **overrides,
            "consumer_group": f"journey-test-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 6000,
            **extra,
        }
    )


@pytest.fixture(scope="session")
def journey_settings(settings_overrides: dict[str, Any]) -> JourneySettings:
    return journey_settings_for(settings_overrides, share_limits={"phone": 3, "chat_session": 2})


class Worker:
    """A journey worker running in this event loop until ``stop()``, with the map's compactor
    beside it (``waypoint worker journey maps``, as every deployment runs them)."""

    def __init__(self, settings: JourneySettings, *, maps: bool = True, **consumer_overrides: Any):
        self.settings = settings
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(run(settings, stop=self.stopping, **consumer_overrides))
        self.maps = asyncio.create_task(run_maps(settings, stop=self.stopping)) if maps else None

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 30)
        if self.maps is not None:
            await asyncio.wait_for(self.maps, 30)


@pytest.fixture(scope="session")
async def journey_worker(journey_settings: JourneySettings, db: Database) -> AsyncIterator[Worker]:
    worker = Worker(journey_settings)
    yield worker
    await worker.stop()


@pytest.fixture(scope="session")
async def journey(
    journey_settings: JourneySettings, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(journey_settings)) as client:
        yield client


async def send(
    producer: AIOKafkaProducer,
    settings: JourneySettings,
    *events: dict[str, Any],
    topic: str | None = None,
) -> None:
    """Validate as ingest does and produce to the normalized topic, keyed by the primary key."""
    for raw in events:
        env = validate_event(raw, now=datetime.now(UTC))
        await producer.send_and_wait(
            topic or settings.topic_normalized, env.to_json(), key=env.primary_key().encode()
        )


async def context_when(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    check: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 30.0,
    **params: str,
) -> dict[str, Any]:
    """Poll the screen pop until ``check(context)`` holds."""

    async def probe() -> dict[str, Any] | None:
        r = await client.get("/v1/context", params=params, headers=headers)
        if r.status_code == 200 and check(r.json()):
            return r.json()
        return None

    return await eventually(probe, timeout=timeout)


__all__ = ["Worker", "cloud_event", "context_when", "journey_settings_for", "send"]
