"""Every service gets health, readiness and metrics from the shared app factory."""

from fastapi import APIRouter

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
