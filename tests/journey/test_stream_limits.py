"""Live streams are capped per API key (``WAYPOINT_SSE_STREAMS_PER_KEY``): one key past the cap
gets 429 with the reason; a closed stream frees its slot; other keys are not affected."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack

import httpx

from services.journey.app import create_app
from tests.journey.conftest import cloud_event, context_when, send
from tests.support import eventually, served


async def test_live_streams_are_capped_per_key(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    other_key = await make_tenant.key(tenant, scopes=["context:read"])
    email = f"cap-{uuid.uuid4().hex[:6]}@x.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
    found = await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value=email
    )
    url = f"/v1/customers/{found['customer_id']}/stream"
    app = create_app(journey_settings.model_copy(update={"sse_streams_per_key": 2}))
    async with served(app) as client, AsyncExitStack() as streams:
        opened: list[httpx.Response] = []
        for _ in range(2):
            response = await streams.enter_async_context(
                client.stream("GET", url, headers=tenant.headers)
            )
            assert response.status_code == 200
            opened.append(response)
        refused = await client.get(url, headers=tenant.headers)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert "2 live streams open" in refused.json()["detail"]
        assert refused.headers["RateLimit-Limit"] == "2"
        assert int(refused.headers["Retry-After"]) >= 1
        # another key of the same tenant has its own slots
        async with client.stream(
            "GET", url, headers={"Authorization": f"Bearer {other_key}"}
        ) as response:
            assert response.status_code == 200
        await opened[0].aclose()  # the agent closes one tab: its slot is freed

        async def reopened() -> bool:
            async with client.stream("GET", url, headers=tenant.headers) as response:
                return response.status_code == 200

        assert await eventually(reopened, timeout=20, interval=0.2)
