"""The agent desktop's live stream: a new event reaches an open SSE connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import orjson
import uvicorn

from services.journey.app import create_app
from shared.embedded import free_port
from tests.journey.conftest import cloud_event, context_when, send
from tests.support import eventually


async def sse_events(response: httpx.Response):
    name, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif line == "" and name:
            yield name, orjson.loads("\n".join(data))
            name, data = None, []


async def test_stream_pushes_a_context_change_after_a_new_event(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    email = f"live-{uuid.uuid4().hex[:6]}@x.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
    cid = (
        await context_when(
            journey, tenant.headers, lambda c: True, identifier_type="email", value=email
        )
    )["customer_id"]

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(journey_settings), port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not serving.done(), "the server stopped before it started"
        return bool(server.started)

    try:
        await eventually(started)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            other = await make_tenant(scopes=["context:read"])
            denied = await client.get(f"/v1/customers/{cid}/stream", headers=other.headers)
            assert denied.status_code == 404
            async with client.stream(
                "GET", f"/v1/customers/{cid}/stream", headers=tenant.headers
            ) as response:
                assert response.status_code == 200
                events = sse_events(response)
                name, first = await asyncio.wait_for(anext(events), 10)
                assert name == "context"
                assert first["customer_id"] == cid
                await send(
                    producer,
                    journey_settings,
                    cloud_event(
                        tenant=tenant.id,
                        type="case.opened",
                        identifiers=ident,
                        case_id="LIVE-1",
                        reason="refund",
                    ),
                )
                name, changed = await asyncio.wait_for(anext(events), 20)
                assert name == "context.changed"
                assert changed["version"] > first["version"]
                assert [c["case_id"] for c in changed["open_cases"]] == ["LIVE-1"]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(serving, 10)
