"""The journey health summary's experience slot: the survey day counts follow the responses
stored (and erased), equal a recount from the stored events, and the slot gives the figures
of the responses received in each period up to ``as_of`` (whole days from the counts, the day
of ``as_of`` from the events)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from services.journey.experience import counts, health, stats
from services.journey.identity import repository as identity_repo
from services.journey.privacy.service import JourneyErasure
from services.journey.quality.schemas import Range
from shared.db import Database, raw_connection
from shared.events.erasure import CustomerErasureRequested
from shared.privacy.crypto import Keyring
from tests.journey.maps.support import new_tenant

START = datetime(2025, 3, 3, tzinfo=UTC)


def response(tenant: str, customer: uuid.UUID, at: datetime, data: dict[str, Any]) -> tuple:
    envelope = {"type": "survey.responded", "time": at.isoformat(), "data": data}
    return (tenant, f"ev-{uuid.uuid4().hex}", customer, "survey.responded", at, [], "matched",
            "r", orjson.dumps(envelope).decode())  # fmt: skip


async def stored_counts(db: Database, tenant: str) -> dict[tuple, int]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            "SELECT day, kind, score, n FROM journey.experience_survey_day WHERE tenant_id = $1",
            tenant,
        )
    return {tuple(r.values())[:3]: r["n"] for r in rows}


async def recounted(db: Database, tenant: str) -> dict[tuple, int]:
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute("DELETE FROM journey.experience_survey_day WHERE tenant_id = $1", tenant)
        await counts.fill(conn, tenant)
    return await stored_counts(db, tenant)


def expected(rows: list[tuple], lo: datetime, hi: datetime) -> dict[str, dict[str, Any]]:
    scores: dict[str, list[float]] = {}
    for row in rows:
        data = orjson.loads(row[8])["data"]
        found = counts.survey_of(data)
        if found and lo <= row[4] < hi:
            scores.setdefault(found[0], []).append(found[1])
    return {k: stats.summary(k, sorted(v)) for k, v in scores.items()}


async def test_survey_counts_follow_stored_and_erased_responses(db, journey_settings):
    rng = random.Random(5)
    tenant = new_tenant()
    customers = [uuid.uuid4() for _ in range(4)]
    rows = []
    for _ in range(300):
        at = START + timedelta(seconds=rng.randint(0, 14 * 86_400))
        kind = rng.choice(["csat", "nps", "ces", "stars"])
        score: Any = rng.choice([rng.randint(0, 10), 3.5, "high", True, None])
        rows.append(response(tenant, rng.choice(customers), at, {"survey": kind, "score": score}))
    async with db.session() as session:
        conn = await raw_connection(session)
        for i in range(0, len(rows), 50):  # in chunks, as the applier stores them
            await identity_repo.insert_events(conn, rows[i : i + 50])
    stored = await stored_counts(db, tenant)
    assert stored
    assert stored == await recounted(db, tenant)

    # the slot, with as_of inside a day: whole days from the counts, that day from the events
    as_of = START + timedelta(days=11, hours=15)
    r = Range(date(2025, 3, 10), date(2025, 3, 17), as_of)
    before = Range(date(2025, 3, 3), date(2025, 3, 10), as_of)
    async with db.session() as session:
        got = await health.section(await raw_connection(session), tenant, r, before)
    now = expected(rows, datetime(2025, 3, 10, tzinfo=UTC), as_of)
    then = expected(rows, START, datetime(2025, 3, 10, tzinfo=UTC))
    for kind in ("csat", "nps", "ces"):
        assert got[kind]["summary"] == now[kind], kind
        assert got[kind]["previous_summary"] == then[kind], kind
        assert got[kind]["n"] == now[kind]["n"]
    segmented = Range(r.start, r.end, as_of, {"tier": "gold"})
    async with db.session() as session:
        conn = await raw_connection(session)
        assert (await health.section(conn, tenant, segmented, before))["available"] is False

    # journey's erasure uncounts the customer's responses before deleting them
    erase = JourneyErasure(Keyring.from_setting(journey_settings.sealing_keys), journey_settings)
    command = CustomerErasureRequested(
        erasure_id=str(uuid.uuid4()), tenant=tenant, customer_id=str(customers[0]),
        customer_ids=[str(customers[0])], identifier_hashes=[], requested_at=datetime.now(UTC),
    )  # fmt: skip
    async with db.session() as session:
        done = await erase(await raw_connection(session), command)
    assert done["events"] > 0
    after = await stored_counts(db, tenant)
    assert after != stored
    assert after == await recounted(db, tenant)
