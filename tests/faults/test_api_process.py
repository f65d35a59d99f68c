"""The journey API process (``waypoint serve journey``) SIGKILLed mid-command, then restarted,
on the shared pipeline. Its client retries each command with the same ``Idempotency-Key``
until it gets a 2xx: every merge, split and fact takes effect once (identity graph, facts,
journey's outbox → alerts' ledger), whether the killed attempt had committed or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from tests.faults.checks import MERGES, Commands, count
from tests.faults.conftest import Baseline, Pipeline, check
from tests.support import eventually

pytestmark = pytest.mark.timeout(600)

API = "journey-api"
KEYS = "SELECT count(*) FROM journey.idempotency_key WHERE tenant_id = :t AND key = ANY(:k)"


@pytest.fixture
async def api(pipeline: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the pipeline's journey API process (started by the scenario, stopped after)."""
    url = f"http://127.0.0.1:{pipeline.stack.port(API)}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            yield client
    finally:
        pipeline.stack.stop(API)


async def serving(api: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        try:
            return (await api.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(ready, timeout=400, interval=0.2)  # 120 s was once too short at load 38


async def until_2xx(
    api: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """The client's retry: the same request and key until a 2xx (the API may be down)."""
    deadline = time.monotonic() + 400  # as long as the API may take to start again
    while True:
        try:
            r = await api.post(url, json=body, headers=headers)
            if r.is_success:
                return r
            assert r.status_code >= 500, r.text  # a 4xx is the command's answer, not a fault
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 2xx"
        await asyncio.sleep(0.2)


async def stored_answer(p: Pipeline, tenant: str, key: str) -> tuple[int, Any]:
    async with p.db.session() as session:
        row = (
            await session.execute(
                text("SELECT status_code, response::text FROM journey.idempotency_key "
                     "WHERE tenant_id = :t AND key = :k"),
                {"t": tenant, "k": key},
            )
        ).one()  # fmt: skip
    return int(row[0]), orjson.loads(row[1])


async def test_the_journey_api_sigkilled_mid_command_then_retried_by_key(
    pipeline: Pipeline, api: httpx.AsyncClient, baseline: Baseline
) -> None:
    """1. A merge and a fact in flight (blocked on context rows the test holds: the fact's event
    is inserted, not committed) when the API is SIGKILLed: nothing committed; the retries, sent
    while it restarts, do the work once. 2. A split and a second fact, each with the API armed
    to SIGKILL itself once the command has committed, before it answers: the retry after the
    restart gets the stored answer (``Idempotent-Replayed``) and does nothing again."""
    p = pipeline
    tenant, traffic = await p.settled_tenant()
    people = await Commands.prepare(p.db, tenant.id)
    survivor, merged, other = people.survivor, people.merged, people.other

    def keyed(key: str) -> dict[str, str]:
        return {**tenant.headers, "Idempotency-Key": f"{key}-{tenant.id}"}

    merge = ("/v1/customers/merge",
             {"survivor_id": survivor, "merged_id": merged, "reason": "same person"},
             keyed("merge"))  # fmt: skip
    fact = (f"/v1/customers/{other}/facts", {"name": "plan", "value": "gold"}, keyed("fact"))
    split = (f"/v1/customers/{survivor}/split", {}, keyed("split"))
    fact2 = (f"/v1/customers/{other}/facts", {"name": "tier", "value": "2"}, keyed("fact2"))

    # 1. Killed while the merge and the fact wait on the test's row locks, uncommitted.
    p.stack.start(API)
    await serving(api)
    async with p.db.session() as holder:
        holder_pid = await holder.scalar(text("SELECT pg_backend_pid()"))
        await holder.execute(
            text("SELECT 1 FROM journey.context WHERE tenant_id = :t "
                 "AND customer_id = ANY(CAST(:c AS uuid[])) FOR UPDATE"),
            {"t": tenant.id, "c": [survivor, merged, other]},
        )  # fmt: skip
        in_flight = [
            asyncio.create_task(api.post(url, json=body, headers=headers))
            for url, body, headers in (merge, fact)
        ]

        async def both_blocked() -> bool:
            blocked = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'journey' "
                       "AND :h = ANY(pg_blocking_pids(pid))")  # fmt: skip
            return await count(p.db, blocked, h=holder_pid) == 2  # the API's two commands

        await eventually(both_blocked, timeout=60, interval=0.05)
        p.stack.kill(API)
        for lost in await asyncio.gather(*in_flight, return_exceptions=True):
            assert isinstance(lost, httpx.TransportError), lost  # no answer reached the client
        await holder.rollback()
    keys = [h["Idempotency-Key"] for _, _, h in (merge, fact)]
    assert await count(p.db, KEYS, t=tenant.id, k=keys) == 0  # the killed attempts left nothing
    assert await count(p.db, MERGES, t=tenant.id) == people.merges_before
    retries = [asyncio.create_task(until_2xx(api, *command)) for command in (merge, fact)]
    p.stack.start(API)  # the retries were already knocking
    answered = await asyncio.gather(*retries)
    for r in answered:
        assert r.headers.get("Idempotent-Replayed") is None, r.headers  # done now, once
    for (url, body, headers), first in zip((merge, fact), answered, strict=True):
        again = await api.post(url, json=body, headers=headers)
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers.get("Idempotent-Replayed") == "true"
    fact_ids = [answered[1].json()["event_id"]]

    # 2. Killed by its own crash point after each command committed, before it answered.
    for url, body, headers in (split, fact2):
        p.stack.stop(API)
        killed = p.stack.start(API, crash_at=f"{API}:after_commit:1")
        await serving(api)
        with pytest.raises(httpx.TransportError):
            await api.post(url, json=body, headers=headers)
        killed.wait(timeout=30)
        assert p.stack.crashed(killed), p.stack.log(API)[-2000:]
        status, stored = await stored_answer(p, tenant.id, headers["Idempotency-Key"])
        retry = asyncio.create_task(until_2xx(api, url, body, headers))
        p.stack.start(API)
        r = await retry
        assert (r.status_code, r.json()) == (status, stored)  # the original answer
        assert r.headers.get("Idempotent-Replayed") == "true"
        if "event_id" in stored:
            fact_ids.append(stored["event_id"])
    p.stack.stop(API)

    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    effects = await people.effects(fact_ids)
    # Counted, not compared: the merge and split change the contexts.
    check("journey API SIGKILLed mid-command (merge, split, fact), retried by key", found, snap,
          baseline, compare=False)  # fmt: skip
    assert effects == {"merges": 1, "facts": 2, "merged": 1, "split": 1, "fact1": 1, "fact2": 1}, (
        effects
    )
