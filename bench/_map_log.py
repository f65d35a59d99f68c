"""The journey-map benchmark's step log: simulated customers with ~10 steps each over 30 days,
built through the journey worker's real applier and the map compactor (no Kafka), in worker
processes of their own (one customer range each)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from services.journey.applier import ChunkApplier, Incoming
from services.journey.config import JourneySettings
from services.journey.maps import maintain
from shared.db import Database, raw_connection
from shared.events import validate_event

AGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS = ("na", "emea", "apac", "latam")
TIERS = ("standard", "premium", "vip")
# (activity kind, next kinds with weights): a small Markov chain of contact-center journeys.
CHAIN: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "campaign": (("campaign", "purchase", "chat", "call"), (1, 5, 2, 2)),
    "purchase": (("call", "chat", "email", "campaign", "purchase"), (3, 3, 2, 1, 1)),
    "social": (("chat", "call", "social"), (5, 3, 1)),
    "chat": (("call", "chat", "email", "purchase"), (5, 2, 2, 1)),
    "email": (("call", "email", "chat"), (4, 3, 3)),
    "call": (("call", "chat", "email", "purchase", "social"), (4, 2, 2, 1, 1)),
}
STEPS_PER_CUSTOMER = 10


def customer_events(i: int, tenant: str, base: datetime) -> list[dict[str, Any]]:
    rng = random.Random(i)
    who = [{"type": "email", "value": f"m{i}@map-bench.test", "verified_by": "login"}]
    t = base + timedelta(seconds=rng.uniform(0, 10 * 86_400))
    n = 0

    def ev(kind: str, at: datetime, **data: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {
            "specversion": "1.0",
            "id": f"mb{i}-{n}",
            "source": "bench",
            "type": kind,
            "time": at.isoformat(),
            "tenant": tenant,
            "data": {"identifiers": who, **data},
        }

    traits = {"age_group": rng.choice(AGES), "region": rng.choice(REGIONS)}
    traits["tier"] = rng.choice(TIERS)
    out = [ev("identity.linked", t, traits=traits)]
    state = rng.choice(("campaign", "social", "call", "chat"))
    for step in range(STEPS_PER_CUSTOMER):
        iid = f"mb{i}-s{step}"
        if state == "campaign":
            out.append(ev("marketing.touched", t, channel="email", touchpoint="campaign_spring"))
        elif state == "purchase":
            out.append(ev("purchase.completed", t, channel="web", touchpoint="checkout"))
        elif state == "social":
            out.append(ev("message.received", t, interaction_id=iid, channel="social",
                          touchpoint="social_mention", sentiment=-0.4))  # fmt: skip
        elif state == "chat":
            out.append(ev("contact.started", t, interaction_id=iid, channel="web_chat",
                          touchpoint="web_chat"))  # fmt: skip
        elif state == "email":
            out.append(ev("message.received", t, interaction_id=iid, channel="email",
                          touchpoint="email_support"))  # fmt: skip
        else:
            out.append(ev("contact.started", t, interaction_id=iid, channel="phone",
                          touchpoint="inbound_call"))  # fmt: skip
            if rng.random() < 0.3:
                out.append(ev("contact.abandoned", t + timedelta(seconds=rng.uniform(10, 300)),
                              interaction_id=iid, channel="ivr", where="ivr"))  # fmt: skip
        t += timedelta(seconds=rng.choice((rng.uniform(60, 7200), rng.uniform(3600, 4 * 86_400),
                                           rng.uniform(8 * 86_400, 12 * 86_400))))  # fmt: skip
        kinds, weights = CHAIN[state]
        state = rng.choices(kinds, weights)[0]
    return out


async def build(spec: dict[str, Any]) -> dict[str, Any]:
    """Apply customers [first, last) in chunks of 500 events, the compactor running alongside
    as it does in the worker; return when the map has folded everything."""
    settings = JourneySettings(**spec["settings"])
    base = datetime.fromisoformat(spec["base"])
    db = Database(settings.dsn, pool_size=4, application_name="map-bench-build")
    stop = asyncio.Event()
    compactor = asyncio.create_task(maintain.Compactor(db, settings).run(stop))
    now = datetime.now(UTC)
    events = 0
    started = time.perf_counter()
    chunk: list[Incoming] = []
    for i in range(spec["first"], spec["last"]):
        for raw in customer_events(i, spec["tenant"], base):
            env = validate_event(raw, now=now)
            chunk.append(Incoming(env, env.to_json()))
        if len(chunk) >= settings.chunk_size:
            async with db.session() as session:
                await ChunkApplier(await raw_connection(session), settings).run(chunk)
            events += len(chunk)
            chunk = []
            await asyncio.sleep(0)  # let the compactor run between chunks, as in the worker
    if chunk:
        async with db.session() as session:
            await ChunkApplier(await raw_connection(session), settings).run(chunk)
        events += len(chunk)
    applied = time.perf_counter() - started
    while True:  # wait for the compactor to catch up
        async with db.session() as session:
            conn = await raw_connection(session)
            waiting = await conn.fetchval(
                "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", spec["tenant"]
            )
        if not waiting:
            break
        await asyncio.sleep(0.2)
    stop.set()
    await compactor
    await db.dispose()
    return {"events": events, "applied_s": applied, "total_s": time.perf_counter() - started}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(build(json.loads(sys.stdin.read())))))
