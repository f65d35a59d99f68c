"""Every service gets health, readiness and metrics from the shared app factory."""

import asyncio

from fastapi import APIRouter, Request
from opentelemetry import trace
from sqlalchemy import text

from shared.app import create_app
from shared.auth.dependencies import EventsReader
from shared.config import CommonSettings
from shared.db import Database
from tests.support import TenantFactory, app_client

router = APIRouter()


@router.get("/v1/whoami")
async def whoami(principal: EventsReader) -> dict[str, str]:
    return {"tenant": principal.tenant_id}


def _app(settings_overrides):
    return create_app(
        service="probe",
        settings=CommonSettings(**settings_overrides),
        routers=[router],
        description="probe",
        configure_logs=False,
    )


async def test_health_readiness_and_metrics(settings_overrides, db: Database):
    async with app_client(_app(settings_overrides)) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        await client.get("/v1/whoami")
        metrics = (await client.get("/metrics")).text
        sample = (
            'waypoint_http_requests_total{method="GET",route="/v1/whoami",'
            'service="probe",status="401"}'
        )
        assert sample in metrics


async def test_readiness_fails_when_the_broker_is_unreachable(settings_overrides, db: Database):
    from shared.embedded import free_port

    overrides = {**settings_overrides, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}
    async with app_client(_app(overrides)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] == "unreachable"


async def test_auth_errors_are_clear_4xx(settings_overrides, make_tenant: TenantFactory):
    tenant = await make_tenant(scopes=["alerts:read"])
    async with app_client(_app(settings_overrides)) as client:
        missing = await client.get("/v1/whoami")
        assert missing.status_code == 401
        assert missing.json()["error"] == "unauthorized"
        wrong_scope = await client.get("/v1/whoami", headers=tenant.headers)
        assert wrong_scope.status_code == 403
        assert "events:read" in wrong_scope.json()["detail"]
        reader = await make_tenant(scopes=["events:read"])
        ok = await client.get("/v1/whoami", headers=reader.headers)
        assert ok.json() == {"tenant": reader.id}


async def test_an_exhausted_database_pool_is_a_503_to_retry_not_a_500(
    settings_overrides, make_tenant: TenantFactory
):
    """Overload (issue 13's fault suite found a 500): when every connection of the process
    stays busy for the pool's whole wait, the request gets 503 with Retry-After."""
    settings = CommonSettings(**settings_overrides)
    small = Database(settings.dsn, pool_size=1, pool_timeout=0.5)  # 2 connections at most
    release = asyncio.Event()
    holding = asyncio.Semaphore(0)
    busy = APIRouter()

    @busy.get("/v1/hold")
    async def hold(principal: EventsReader) -> dict[str, str]:
        async with small.session() as session:
            await session.execute(text("SELECT 1"))
            holding.release()
            await release.wait()
        return {"held": principal.tenant_id}

    app = create_app(
        service="probe",
        settings=settings,
        routers=[busy],
        description="probe",
        configure_logs=False,
    )
    tenant = await make_tenant(scopes=["events:read"])
    try:
        async with app_client(app) as client:
            holders = [
                asyncio.create_task(client.get("/v1/hold", headers=tenant.headers))
                for _ in range(2)
            ]
            for _ in holders:
                await asyncio.wait_for(holding.acquire(), 30)
            refused = await client.get("/v1/hold", headers=tenant.headers)
            release.set()
            held = await asyncio.gather(*holders)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "overloaded"
        assert int(refused.headers["Retry-After"]) >= 1
        assert [r.status_code for r in held] == [200, 200]
    finally:
        await small.dispose()


class _ConfiguredTracerProvider(trace.TracerProvider):
    """What FastAPI takes for a configured provider (not the API's deferred or no-op ones)."""

    def get_tracer(self, *args: object, **kwargs: object) -> trace.Tracer:
        return trace.NoOpTracer()


async def test_fastapi_native_telemetry_is_off_even_with_a_configured_provider(
    settings_overrides, monkeypatch
):
    # With FastAPI's telemetry on, a configured global provider makes every request go through
    # its NativeTelemetry wrapper, which marks the scope; the factory turns it off.
    monkeypatch.setattr(trace, "get_tracer_provider", _ConfiguredTracerProvider)
    seen: list[bool] = []
    app = _app(settings_overrides)

    @app.get("/v1/scope-probe")
    async def scope_probe(request: Request) -> dict[str, str]:
        seen.append("fastapi.telemetry" in request.scope)
        return {}

    async with app_client(app) as client:
        assert (await client.get("/v1/scope-probe")).status_code == 200
    assert seen == [False]
