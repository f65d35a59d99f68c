"""The ingest HTTP API (port 8001): CloudEvents and Segment in, stored events and rejects out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.ingest import endpoints, segment_endpoints
from services.ingest.config import IngestSettings
from shared.app import create_app as create_service_app
from shared.worker import tune_gc

DESCRIPTION = (
    "Send customer-journey events as CloudEvents (one, or a batch) or with the Segment HTTP API "
    "(identify, track, alias, page, screen, group, batch). Accepted events are durably queued on "
    "the raw topic before the response; the ingest worker validates, dedupes, stores and "
    "publishes them. Read back stored events and dead letters for debugging."
)


@asynccontextmanager
async def _tuned(_app: FastAPI) -> AsyncIterator[None]:
    tune_gc()  # every request validates a batch of models: see tune_gc
    yield


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    return create_service_app(
        service="ingest",
        settings=settings,
        routers=[endpoints.router, segment_endpoints.router],
        description=DESCRIPTION,
        with_producer=True,
        extra_lifespan=_tuned,
        max_body_bytes=settings.max_body_bytes,
    )
