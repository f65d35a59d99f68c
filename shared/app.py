"""The FastAPI application factory every service uses: lifespan, health, metrics, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline

from shared import openapi
from shared.auth.verifier import KeyVerifier
from shared.config import CommonSettings
from shared.db import Database
from shared.error_handlers import install_error_handlers
from shared.guards import RequestGuard
from shared.kafka import broker_reachable, make_producer
from shared.logging import configure_logging, get_logger
from shared.metrics import MetricsMiddleware, metrics_endpoint
from shared.ratelimit import Limits, RateLimiter, make_store
from shared.ratelimit.streams import StreamSlots
from shared.runtime import watch_gc, watch_loop_lag

# Every signal off, and no exporters from OTEL_* variables: ``enabled()`` is then False from
# this dictionary alone, before any provider is looked up.
NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}

ExtraLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# Largest request body a service reads unless it says otherwise (ingest allows its batches).
MAX_BODY_BYTES = 1024 * 1024


def create_app(
    *,
    service: str,
    settings: CommonSettings,
    routers: Sequence[APIRouter],
    description: str,
    with_producer: bool = False,
    producer_options: dict[str, Any] | None = None,
    extra_lifespan: ExtraLifespan | None = None,
    configure_logs: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build a service app. Nothing connects until the lifespan starts.

    Every route gets the request guards of ``shared.guards`` (NUL in path, query or JSON body
    is a 422) and a body limit (413)."""
    log = get_logger(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging(service, level=settings.log_level, json=settings.log_json)
        db = Database(settings.dsn, pool_size=settings.db_pool_size, application_name=service)
        app.state.settings = settings
        app.state.db = db
        limiter = RateLimiter(
            Limits.from_settings(settings),
            make_store(settings, db),
            sync_seconds=settings.rate_limit_sync_seconds,
            enabled=settings.rate_limit_enabled,
        )
        verifier = KeyVerifier(
            db.sessionmaker,
            ttl=settings.api_key_cache_seconds,
            rejected_entries=settings.api_key_rejected_cache_size,
            rejected_ttl=settings.api_key_rejected_cache_seconds,
            limiter=limiter,
            last_used_every=settings.api_key_last_used_seconds,
        )
        app.state.rate_limiter = limiter
        app.state.key_verifier = verifier
        app.state.stream_slots = StreamSlots(settings.sse_streams_per_key)
        watch_gc()
        background = [
            asyncio.create_task(limiter.run()),
            asyncio.create_task(verifier.run()),
            asyncio.create_task(watch_loop_lag()),
        ]
        app.state.producer = None
        try:
            if with_producer:
                app.state.producer = make_producer(settings, **(producer_options or {}))
                await app.state.producer.start()
            if extra_lifespan is not None:
                async with extra_lifespan(app):
                    log.info("service.started")
                    yield
            else:
                log.info("service.started")
                yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await _quietly(limiter.close(), verifier.save_last_used())
            if app.state.producer is not None:
                await app.state.producer.stop()
            await db.dispose()
            log.info("service.stopped")

    # Swagger UI and ReDoc from assets the package ships (fastapi-offline), not a CDN.
    app = FastAPIOffline(
        # FastAPI's native OpenTelemetry is off (its documented switch): Waypoint's metrics are
        # its own Prometheus ones, and with it on every request asks the three global
        # OpenTelemetry providers whether they are configured (~8 % of a cached screen pop).
        telemetry=NO_TELEMETRY,
        title=f"Waypoint {service}",
        version="0.1.0",
        description=description,
        lifespan=lifespan,
        dependencies=[Depends(openapi.reject_unknown_query)],
        swagger_ui_parameters={"persistAuthorization": True},
    )
    openapi.install(app)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, service=service)  # outermost: counts the refusals too

    @app.get("/healthz", tags=["operations"], include_in_schema=True)
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: PostgreSQL and the Kafka broker answer."""
        checks: dict[str, Any] = {}
        try:
            await app.state.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure as not ready
            checks["database"] = f"error: {type(exc).__name__}"
        checks["broker"] = "ok" if await broker_reachable(settings) else "unreachable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    for router in routers:
        app.include_router(router)
    return app


async def _quietly(*steps: Awaitable[Any]) -> None:
    """Shut-down bookkeeping (the last rate-limit counts, last-used times): a failure is logged,
    never allowed to stop the shut-down."""
    for step in steps:
        try:
            await step
        except Exception as exc:  # noqa: BLE001 - see the docstring
            get_logger("app").warning("shutdown.step_failed", error=f"{type(exc).__name__}: {exc}")
