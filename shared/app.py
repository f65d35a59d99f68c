"""The FastAPI application factory every service uses: lifespan, health, metrics, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from shared.auth.service import KeyVerifier
from shared.config import CommonSettings
from shared.db import Database
from shared.errors import install_error_handlers
from shared.guards import RequestGuard
from shared.kafka import broker_reachable, make_producer
from shared.logging import configure_logging, get_logger
from shared.metrics import MetricsMiddleware, metrics_endpoint

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
        app.state.key_verifier = KeyVerifier(db.sessionmaker, ttl=settings.api_key_cache_seconds)
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
            if app.state.producer is not None:
                await app.state.producer.stop()
            await db.dispose()
            log.info("service.stopped")

    app = FastAPI(
        title=f"Waypoint {service}",
        version="0.1.0",
        description=description,
        lifespan=lifespan,
    )
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
