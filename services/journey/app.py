"""The journey API application."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.journey.config import JourneySettings
from services.journey.conformance.endpoints import router as conformance_router
from services.journey.context import fast, service
from services.journey.context.cache import ContextCache
from services.journey.context.endpoints import router as context_router
from services.journey.context.stream import ContextHub
from services.journey.experience.endpoints import router as experience_router
from services.journey.identity.endpoints import router as identity_router
from services.journey.maps.endpoints import router as maps_router
from services.journey.pages import install as install_pages
from services.journey.privacy.endpoints import router as privacy_router
from services.journey.quality.endpoints import router as quality_router
from shared.app import create_app as create_service_app
from shared.db import raw_pool
from shared.sse import Shutdown


def create_app(settings: JourneySettings | None = None) -> FastAPI:
    settings = settings or JourneySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The read path uses its own asyncpg pool: prepared statements, no ORM, no pre-ping;
        # read-only queries leave no session state (no RESET ALL on release).
        app.state.pg_pool = await raw_pool(
            settings.dsn, "journey-api", min_size=2, max_size=settings.db_pool_size
        )
        # Concurrent screen pops' identifier look-ups, one statement per batch (0: one each).
        app.state.lookups = (
            service.identifier_lookups(app.state.pg_pool, settings.context_lookup_batch_max)
            if settings.context_lookup_batch_max > 0
            else None
        )
        app.state.cache = (
            ContextCache(settings.context_cache_mb * 1024 * 1024)
            if settings.context_cache_mb > 0
            else None
        )
        app.state.hub = ContextHub(settings.dsn, settings.notify_channel, app.state.cache)
        await app.state.hub.start()
        # Live streams end when uvicorn begins to shut down (it drains them before the
        # lifespan ends, and would wait for ever).
        app.state.shutdown = Shutdown()
        watching = asyncio.create_task(app.state.shutdown.watch())
        # Start-up objects are never garbage (frozen). Young collections stay small: with
        # sse-starlette every ended SSE stream left ~120-140 objects of cyclic garbage, and at
        # 50,000 one collection freed ~38,000 at once, 25-90 ms that stalled every request in
        # flight; 5,000 gave pauses under 20 ms and less GC time in all. Streams
        # (shared/sse.py) now leave none; 5,000 is kept: an A/B against 50,000 on a loaded
        # machine did not separate them (docs/benchmarks.md, "Live streams without cyclic
        # garbage").
        gc.freeze()
        gc.set_threshold(5_000, 50, 100)
        try:
            yield
        finally:
            app.state.shutdown.set()
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await app.state.hub.stop()
            await app.state.pg_pool.close()

    app = create_service_app(
        service="journey",
        settings=settings,
        routers=[
            context_router,
            identity_router,
            maps_router,
            conformance_router,
            experience_router,
            privacy_router,
            quality_router,
        ],
        description=(
            "Identity graph and the agent's cross-channel context: screen pop by any identifier, "
            "timeline, facts ledger, route hints, live updates, merge and split; the journey map."
        ),
        extra_lifespan=lifespan,
    )
    fast.install(app)  # GET /v1/context without FastAPI's per-request layers
    install_pages(app, settings)  # /app/agent, /app/map (services/journey/pages)
    return app
