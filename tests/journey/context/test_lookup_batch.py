"""Uncached screen pops in flight at once share one statement (services/journey/context/batch.py,
``repository.by_identifiers``), and each caller still gets exactly its own answer."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.journey.app import create_app
from services.journey.context import repository as repo
from services.journey.context import service
from shared.db import asyncpg_dsn, raw_pool
from tests.journey.conftest import cloud_event, context_when, send
from tests.support import app_client, eventually

METRIC = "waypoint_journey_lookup_batch_keys"


def ident(t: str, v: str, by: str | None = None) -> dict[str, str]:
    return {"type": t, "value": v, **({"verified_by": by} if by else {})}


def phone(i: int) -> str:
    return f"+1646555{1000 + i:04d}"


async def seed(client, producer, settings, tenants: dict[str, Any], n: int, run: str) -> None:
    """``n`` customers per tenant, customer i of every tenant with the same phone, its own
    e-mail and a trait naming its tenant and number; waits until all are stored."""
    for label, tenant in tenants.items():
        for i in range(n):
            email = f"{label}{i}-{run}@batch.test"
            event = cloud_event(
                tenant=tenant.id,
                type="identity.linked",
                identifiers=[ident("email", email, "login"), ident("phone", phone(i), "caller_id")],
                traits={"tier": f"{label}-{i}"},
            )
            await send(producer, settings, event)
    for label, tenant in tenants.items():
        for i in range(n):
            email = f"{label}{i}-{run}@batch.test"
            await context_when(
                client, tenant.headers, lambda c: True, identifier_type="email", value=email
            )


@pytest.fixture
async def uncached(journey_settings):
    """The journey app with the context cache off: every pop reads PostgreSQL."""
    app = create_app(journey_settings.model_copy(update={"context_cache_mb": 0}))
    async with app_client(app) as client:
        yield app, client


async def test_concurrent_uncached_pops_each_get_their_own_card(
    uncached, journey_worker, producer, journey_settings, make_tenant
):
    app, client = uncached
    run = uuid.uuid4().hex[:6]
    tenants = {
        "a": await make_tenant(scopes=["context:read"]),
        "b": await make_tenant(scopes=["context:read"]),
    }
    n = 15
    await seed(client, producer, journey_settings, tenants, n, run)
    # two customers of tenant a share a phone (below the share limit): the pop is ambiguous
    shared = "+16465559999"
    for i in range(2):
        email = f"shared{i}-{run}@batch.test"
        await send(
            producer,
            journey_settings,
            cloud_event(
                tenant=tenants["a"].id,
                identifiers=[ident("email", email, "login"), ident("phone", shared, "caller_id")],
            ),
        )
        await context_when(
            client, tenants["a"].headers, lambda c: True, identifier_type="email", value=email
        )

    async def pop(label: str, value: str) -> tuple[int, dict[str, Any]]:
        r = await client.get(
            "/v1/context",
            params={"identifier_type": "phone", "value": value},
            headers=tenants[label].headers,
        )
        return r.status_code, r.json()

    lone_shared = await pop("a", shared)  # answered alone (nothing else in flight)
    assert lone_shared[0] == 200
    assert lone_shared[1]["ambiguous"]["holders"] == 2
    requests = [(label, phone(i), i) for label in tenants for i in range(n)]
    requests += [("a", shared, -1)] * 3 + [("b", shared, -2)] * 3  # b holds no such phone
    requests += [(label, phone(500 + i), -2) for label in tenants for i in range(3)]
    lookups = app.state.lookups
    batches, keys = lookups.batches, lookups.keys
    exported = [REGISTRY.get_sample_value(f"{METRIC}_{s}") or 0.0 for s in ("count", "sum")]
    rng = random.Random(14)
    for _ in range(3):
        rng.shuffle(requests)
        answers = await asyncio.gather(*(pop(label, value) for label, value, _ in requests))
        for (label, _, i), (status, card) in zip(requests, answers, strict=True):
            if i == -2:
                assert status == 404, card
            elif i == -1:
                assert status == 200
                assert card["ambiguous"] == lone_shared[1]["ambiguous"]
                assert card["customer_id"] == lone_shared[1]["customer_id"]  # strongest link
            else:
                assert status == 200
                assert card["traits"]["tier"]["value"] == f"{label}-{i}"
                emails = {x["value"] for x in card["identities"] if x["type"] == "email"}
                assert emails == {f"{label}{i}-{run}@batch.test"}  # never the other tenant's
                assert "ambiguous" not in card
    # the look-ups went out in batches, far fewer statements than pops
    sent, carried = lookups.batches - batches, lookups.keys - keys
    assert carried == 3 * len(requests)
    assert sent < carried / 2
    # ... and SREs see it: one observation per statement, of the keys it carried
    now = [REGISTRY.get_sample_value(f"{METRIC}_{s}") or 0.0 for s in ("count", "sum")]
    assert (now[0] - exported[0], now[1] - exported[1]) == (sent, carried)

    # the batched statement gives every key exactly the rows of its own statement
    pool = app.state.pg_pool
    keys_ = [(tenants[label].id, "phone", value) for label, value, _ in requests]
    keys_ += [(tenants["a"].id, "email", f"a0-{run}@batch.test"), ("no-such-tenant", "phone", "+1")]
    together = await repo.by_identifiers(pool, keys_)
    alone = [await repo.by_identifier(pool, *k) for k in keys_]
    assert [[tuple(r)[:3] for r in rows] for rows in together] == [
        [tuple(r) for r in rows] for rows in alone
    ]


async def pool_for(journey_settings, name: str, **server_settings: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(journey_settings.dsn),
        min_size=1,
        max_size=2,
        server_settings={"application_name": name, **server_settings},
    )
    return pool


async def test_a_batch_whose_statement_fails_answers_every_waiter_with_the_error(
    journey_settings, db
):
    """A real failure: the batch's statement waits for a lock past its statement timeout."""
    pool = await pool_for(journey_settings, "batch-fails", statement_timeout="300")
    locker = await asyncpg.connect(asyncpg_dsn(journey_settings.dsn))
    try:
        lookups = service.identifier_lookups(pool, 64)
        async with locker.transaction():
            await locker.execute("LOCK TABLE journey.identifier IN ACCESS EXCLUSIVE MODE")
            waiters = [
                asyncio.ensure_future(lookups.load(("t", "phone", phone(i)))) for i in range(10)
            ]
            answers = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 20)
        assert lookups.batches == 1  # one statement for the ten
        assert all(isinstance(a, asyncpg.QueryCanceledError) for a in answers), answers
        # the pool is fine afterwards: the next look-up is answered
        assert await lookups.load(("t", "phone", phone(0))) == []
    finally:
        await locker.close()
        await pool.close()


async def test_a_value_that_fails_the_statement_fails_only_its_own_look_up(
    uncached, journey_worker, producer, journey_settings, make_tenant
):
    """PostgreSQL refuses a NUL character in text (class 22): only that caller's look-up fails,
    the others of its batch are answered as if sent alone."""
    app, client = uncached
    run = uuid.uuid4().hex[:6]
    tenant = await make_tenant(scopes=["context:read"])
    await seed(client, producer, journey_settings, {"a": tenant}, 4, run)
    pool = await raw_pool(journey_settings.dsn, "batch-nul", min_size=1, max_size=2)
    try:
        lookups = service.identifier_lookups(pool, 64)
        keys = [(tenant.id, "phone", phone(i)) for i in range(4)]
        keys.insert(2, (tenant.id, "crm_id", "bad\x00value"))
        answers = await asyncio.gather(*(lookups.load(k) for k in keys), return_exceptions=True)
        assert isinstance(answers[2], asyncpg.DataError)
        expected = [await repo.by_identifier(pool, *k) for k in keys[:2] + keys[3:]]
        got = answers[:2] + answers[3:]
        assert [[tuple(r)[:3] for r in rows] for rows in got] == [  # type: ignore[union-attr]
            [tuple(r) for r in rows] for rows in expected
        ]
        assert all(rows for rows in got)  # type: ignore[union-attr]
    finally:
        await pool.close()


async def test_a_cancelled_waiter_leaves_the_others_answered(
    uncached, journey_worker, producer, journey_settings, make_tenant
):
    app, client = uncached
    run = uuid.uuid4().hex[:6]
    tenant = await make_tenant(scopes=["context:read"])
    await seed(client, producer, journey_settings, {"a": tenant}, 4, run)
    pool = await pool_for(journey_settings, "batch-cancel")
    locker = await asyncpg.connect(asyncpg_dsn(journey_settings.dsn))
    try:
        lookups = service.identifier_lookups(pool, 64)
        keys = [(tenant.id, "phone", phone(i)) for i in range(4)]
        expected = [[tuple(r) for r in await repo.by_identifier(pool, *k)] for k in keys]
        assert all(expected)

        # cancelled before its batch is sent
        waiters = [asyncio.ensure_future(lookups.load(k)) for k in keys]
        await asyncio.sleep(0)  # all four queued, the batch not yet sent
        waiters[1].cancel()
        answers = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(answers[1], asyncio.CancelledError)
        for i in (0, 2, 3):
            assert [tuple(r)[:3] for r in answers[i]] == expected[i]  # type: ignore[union-attr]

        # cancelled while its batch's statement is in flight (held by a lock)
        async with locker.transaction():
            await locker.execute("LOCK TABLE journey.identifier IN ACCESS EXCLUSIVE MODE")
            waiters = [asyncio.ensure_future(lookups.load(k)) for k in keys]

            async def waiting() -> bool:
                return bool(
                    await locker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'batch-cancel' AND wait_event_type = 'Lock'"
                    )
                )

            await eventually(waiting, timeout=20, interval=0.02)
            waiters[0].cancel()
        answers = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 20)
        assert isinstance(answers[0], asyncio.CancelledError)
        for i in (1, 2, 3):
            assert [tuple(r)[:3] for r in answers[i]] == expected[i]  # type: ignore[union-attr]
    finally:
        await locker.close()
        await pool.close()


async def test_batch_cap_sends_a_full_batch_at_once(journey_settings, db):
    pool = await raw_pool(journey_settings.dsn, "batch-cap", min_size=1, max_size=4)
    try:
        lookups = service.identifier_lookups(pool, 4)
        keys = [("t", "phone", phone(i)) for i in range(10)]
        assert await asyncio.gather(*(lookups.load(k) for k in keys)) == [[]] * 10
        assert (lookups.batches, lookups.keys) == (3, 10)  # 4 + 4 + 2
    finally:
        await pool.close()
