"""Segment's and RudderStack's own Python SDKs (``segment-analytics-python``,
``rudder-sdk-python``), unchanged, against the ingest API on a real uvicorn server: every call
type, a gzip batch, traits at the top level and in ``context.traits``, and an error body both
SDKs parse. The mapping is in docs/events.md ("Segment mapping")."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import rudderstack.analytics.client as rudder_client
import rudderstack.analytics.request as rudder_request
import segment.analytics.client as segment_client
import segment.analytics.request as segment_request
from sqlalchemy import text

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.db import Database
from tests.support import TenantFactory, eventually, served


@dataclass(frozen=True)
class Sdk:
    name: str
    client: Callable[..., Any]
    api_error: type[Exception]
    source: str  # the library name the SDK sends, so the event's source


SDKS = {
    "segment": Sdk(
        "segment",
        segment_client.Client,
        segment_request.APIError,
        "segment:analytics-python",
    ),
    "rudder": Sdk(
        "rudder",
        rudder_client.Client,
        rudder_request.APIError,
        "segment:analytics-python",  # RudderStack's SDK is a fork and names itself the same
    ),
}


async def stored_envelopes(db: Database, tenant: str) -> dict[str, dict[str, Any]]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT event_id, envelope::text FROM ingest.event WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return {r[0]: orjson.loads(r[1]) for r in rows}


def _calls(client: Any, user: str) -> dict[str, str]:
    """Every call type once; returns message id by call."""
    ids: dict[str, str] = {}
    traits = {
        "email": f"{user}@example.com",
        "name": "Ada Lovelace",
        "plan": "pro",
        "address": {"city": "Oslo"},
    }
    ids["identify"] = client.identify(user_id=user, traits=traits)[1]["messageId"]
    ids["track"] = client.track(
        user_id=user,
        event="Order Completed",
        properties={"order_id": "O-17", "total": 42.5, "currency": "eur"},
    )[1]["messageId"]
    ids["page"] = client.page(user_id=user, name="Pricing", properties={"path": "/pricing"})[1][
        "messageId"
    ]
    ids["screen"] = client.screen(user_id=user, name="Home")[1]["messageId"]
    ids["group"] = client.group(user_id=user, group_id="acct-9", traits={"name": "Acme"})[1][
        "messageId"
    ]
    ids["alias"] = client.alias(previous_id=f"anon-{user}", user_id=user)[1]["messageId"]
    return ids


@pytest.mark.parametrize("sdk_name", ["segment", "rudder"])
async def test_every_call_of_the_real_sdk_is_accepted_mapped_and_stored(
    ingest_settings: IngestSettings,
    make_tenant: TenantFactory,
    db: Database,
    worker: object,
    sdk_name: str,
):
    sdk = SDKS[sdk_name]
    tenant = await make_tenant(scopes=["events:write"])
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with served(create_app(ingest_settings)) as http:
        host = str(http.base_url).rstrip("/")
        # sync_mode: each call is one POST /v1/batch, and an error is raised to the caller
        client = sdk.client(write_key=tenant.key, host=host, sync_mode=True, max_retries=0)
        ids = await asyncio.to_thread(_calls, client, user)

        # the SDK's own queue and upload thread, gzip bodies, one batch of many messages
        errors: list[Exception] = []
        batched = sdk.client(
            write_key=tenant.key,
            host=host,
            gzip=True,
            upload_size=100,
            max_retries=0,
            on_error=lambda error, _batch: errors.append(error),
        )

        def send_batch() -> list[str]:
            sent = [
                batched.track(user_id=user, event="Feature Used", properties={"n": n})[1][
                    "messageId"
                ]
                for n in range(25)
            ]
            batched.flush()
            batched.join()
            return sent

        batch_ids = await asyncio.to_thread(send_batch)
        assert not errors, errors

        async def all_stored() -> bool:
            return len(await stored_envelopes(db, tenant.id)) == len(ids) + len(batch_ids)

        await eventually(all_stored)
    events = await stored_envelopes(db, tenant.id)
    assert set(batch_ids) <= set(events)
    kinds = {call: events[message_id] for call, message_id in ids.items()}
    assert {call: e["type"] for call, e in kinds.items()} == {
        "identify": "identity.linked",
        "track": "purchase.completed",
        "page": "marketing.touched",
        "screen": "product.used",
        "group": "identity.linked",
        "alias": "identity.linked",
    }
    assert all(e["source"] == sdk.source for e in kinds.values())
    # every trait is kept, wherever the SDK put it (RudderStack: context.traits only)
    assert kinds["identify"]["data"]["traits"] == {
        "email": f"{user}@example.com",
        "name": "Ada Lovelace",
        "plan": "pro",
        "address.city": "Oslo",
    }
    identifiers = {(i["type"], i["value"]) for i in kinds["identify"]["data"]["identifiers"]}
    assert {("user_id", user), ("email", f"{user}@example.com")} <= identifiers
    purchase = kinds["track"]["data"]
    assert (purchase["order_id"], purchase["amount"], purchase["currency"]) == ("O-17", 42.5, "EUR")
    assert kinds["screen"]["data"]["feature"] == "screen:Home"
    assert ("account_id", "acct-9") in {
        (i["type"], i["value"]) for i in kinds["group"]["data"]["identifiers"]
    }
    assert ("user_id", f"anon-{user}") in {
        (i["type"], i["value"]) for i in kinds["alias"]["data"]["identifiers"]
    }


@pytest.mark.parametrize("sdk_name", ["segment", "rudder"])
async def test_the_sdk_reads_waypoints_error_bodies(
    ingest_settings: IngestSettings, make_tenant: TenantFactory, sdk_name: str
):
    """A wrong write key is a 401 whose body has Segment's ``code`` and ``message`` (the SDKs
    raised ``KeyError: 'code'`` before), besides Waypoint's ``error`` and ``detail``."""
    sdk = SDKS[sdk_name]
    tenant = await make_tenant(scopes=["events:read"])  # a real key without events:write
    async with served(create_app(ingest_settings)) as http:
        host = str(http.base_url).rstrip("/")
        for key, status, code in (
            (f"wp_wrong_{uuid.uuid4().hex}", 401, "unauthorized"),
            (tenant.key, 403, "forbidden"),
        ):
            client = sdk.client(write_key=key, host=host, sync_mode=True, max_retries=0)
            with pytest.raises(sdk.api_error) as raised:
                await asyncio.to_thread(client.identify, user_id="u-1", traits={"plan": "pro"})
            error: Any = raised.value
            assert (error.status, error.code) == (status, code)
            assert isinstance(error.message, str)
            assert error.message
        r = await http.post("/v1/batch", json={"batch": []}, auth=("nope", ""))
        body = r.json()
        assert r.status_code == 401
        assert set(body) == {"error", "detail", "code", "message"}
    assert threading.active_count() < 100  # the SDKs' upload threads ended
