"""The agent desktop's live stream: a new event reaches an open SSE connection; a client that
leaves ends its stream (subscription and slot freed), a server shutting down ends them all."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx
import orjson
import uvicorn

from services.journey.app import create_app
from shared.embedded import free_port
from tests.journey.conftest import cloud_event, context_when, send
from tests.support import eventually, served


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


async def a_customer(producer, journey_settings, journey, make_tenant):
    """A tenant with one customer known by e-mail: (tenant, customer id, its identifiers)."""
    tenant = await make_tenant(scopes=["context:read"])
    email = f"live-{uuid.uuid4().hex[:6]}@x.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
    found = await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value=email
    )
    return tenant, uuid.UUID(found["customer_id"]), ident


@contextlib.asynccontextmanager
async def uvicorn_serving(app):
    """A real uvicorn server running ``app``: (the server, its task, its base URL). uvicorn's
    default has no graceful-shutdown timeout: an open stream would hold its shutdown for ever."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not serving.done(), "the server stopped before it started"
        return bool(server.started)

    try:
        await eventually(started)
        yield server, serving, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(serving, 10)


async def test_stream_pushes_a_context_change_after_a_new_event(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant, cid, ident = await a_customer(producer, journey_settings, journey, make_tenant)
    async with (
        uvicorn_serving(create_app(journey_settings)) as (_, _, url),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
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
            assert first["customer_id"] == str(cid)
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


async def test_a_client_that_leaves_ends_its_stream_and_frees_its_subscription(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant, cid, _ = await a_customer(producer, journey_settings, journey, make_tenant)
    app = create_app(journey_settings)
    url = f"/v1/customers/{cid}/stream"
    async with served(app) as client:
        assert (await client.head(url, headers=tenant.headers)).status_code == 405  # as before
        hub = app.state.hub
        async with client.stream("GET", url, headers=tenant.headers) as response:
            name, _ = await asyncio.wait_for(anext(sse_events(response)), 10)
            assert name == "context"
            assert hub.listeners(tenant.id, cid) == 1

        async def freed() -> bool:
            return hub.listeners(tenant.id, cid) == 0

        assert await eventually(freed, timeout=10, interval=0.02)


async def test_a_server_shutting_down_ends_open_streams_promptly(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant, cid, _ = await a_customer(producer, journey_settings, journey, make_tenant)
    async with (
        uvicorn_serving(create_app(journey_settings)) as (server, serving, url),
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", f"/v1/customers/{cid}/stream", headers=tenant.headers) as stream,
    ):
        events = sse_events(stream)
        assert (await asyncio.wait_for(anext(events), 10))[0] == "context"
        began = time.monotonic()
        server.should_exit = True  # what SIGTERM does
        with contextlib.suppress(StopAsyncIteration):
            await asyncio.wait_for(anext(events), 10)  # the stream ends
        await asyncio.wait_for(asyncio.shield(serving), 10)
        assert time.monotonic() - began < 5
