"""Quality rows through the real applier, compactor and PostgreSQL equal the pure derivation
from every event of each (merged) customer, whatever the arrival order, chunking, replays and
merges; a rebuild from the stored events gives the same rows. FCR in SQL equals the pure rules
on random rows."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.journey.config import JourneySettings
from services.journey.maps import repository as maps_repo
from services.journey.maps import rules as maps
from services.journey.maps.rebuild import rebuild_from_events
from services.journey.quality import fcr, health, pain, rules
from services.journey.quality import repository as repo
from services.journey.quality.policy import FcrPolicy
from services.journey.quality.schemas import Range
from shared.db import Database, raw_connection
from tests.journey.maps.reference import Ev
from tests.journey.maps.strategies import bridges, event_logs
from tests.journey.maps.support import components, deliver_log, new_tenant
from tests.journey.quality.test_api import quality_rows

BASE = datetime(2025, 3, 3, tzinfo=UTC)
D = 86_400_000_000


async def save_rows(conn: asyncpg.Connection, keyed: list[tuple[tuple, rules.QRow]]) -> None:
    """Quality rows as the compactor stores them: on their step's row (a stub summary here)."""
    await maps_repo.save_steps(conn, [(t, c, {"k": k}, r) for (t, c, k), r in keyed])


def _from_row(row: tuple) -> tuple[str, rules.QRow]:
    (_t, _c, key, at, _day, activity, prev, channel, contact, reason, team, *rest) = row
    segment, rest = tuple(rest[:5]), rest[5:]
    return key, rules.QRow(at, activity, prev, channel, contact, reason, team, segment, *rest)


def expected_rows(events: list[Ev], links: list[tuple[int, int, int]], base_us: int) -> Counter:
    owner = components(events, links)
    facts: dict[str, list[maps.Fact]] = {}
    for e in events:
        facts.setdefault(owner[e.customer], []).append(
            maps.Fact(e.id, e.type, base_us + e.t, e.data)
        )
    for n, (t, a, _b) in enumerate(links):
        facts.setdefault(owner[f"c{a}"], []).append(
            maps.Fact(f"br{n}", "identity.linked", base_us + t * 1_000_000, {})
        )
    out: Counter = Counter()
    for group in facts.values():
        steps = maps.build_steps(group)
        profile = maps.new_profile()
        for f in group:
            maps.fold_profile(profile, f)
        rows = rules.quality_rows(
            steps.values(), profile, window_us=maps.DEFAULT_WINDOW_US, bands=(30, 90, 365)
        )
        out.update(rows.items())
    return out


async def run_example(
    journey_settings: JourneySettings,
    events: list[Ev],
    links: list[tuple[int, int, int]],
    rng: random.Random,
) -> None:
    db = Database(journey_settings.dsn, pool_size=2, application_name="tests-quality")
    tenant = new_tenant()
    try:
        await deliver_log(db, journey_settings, tenant, events, links, BASE, rng)
        stored = await quality_rows(db, tenant)
        expected = expected_rows(events, links, maps.to_us(BASE))
        assert Counter(_from_row(r) for r in stored) == expected
        counts = await fcr_counts(db, tenant)
        assert counts == dict(rules.fcr_cells(row for (_key, row), n in expected.items()
                                              for _ in range(n)))  # fmt: skip
        pains = await pain_counts(db, tenant)
        assert pains == dict(rules.pain_cells(row for (_key, row), n in expected.items()
                                              for _ in range(n)))  # fmt: skip
        examples = await pain_examples(db, tenant)
        assert examples == rules.examples((str(r[1]), r[2], _from_row(r)[1]) for r in stored)
        assert await refilled_examples(db, tenant) == examples
        async with db.session() as session:
            await rebuild_from_events(await raw_connection(session), tenant)
        assert await quality_rows(db, tenant) == stored
        assert await fcr_counts(db, tenant) == counts
        assert await pain_counts(db, tenant) == pains
        assert await pain_examples(db, tenant) == examples
    finally:
        await db.dispose()


@pytest.mark.timeout(600)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=event_logs(customers=3, max_size=16), links=bridges(3), seed=st.integers(0, 2**32))
def test_stored_quality_rows_equal_the_pure_derivation(db, journey_settings, events, links, seed):
    rng = random.Random(seed)
    asyncio.run(run_example(journey_settings, events, links, rng))


async def fcr_counts(db: Database, tenant: str) -> dict[rules.FcrCell, int]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            """SELECT day - date '1970-01-01', mode, reason, activity, team, declared, threshold,
                      n FROM journey.quality_fcr_day WHERE tenant_id = $1""",
            tenant,
        )
    return {tuple(r.values())[:7]: r["n"] for r in rows}


async def pain_counts(db: Database, tenant: str) -> dict[rules.PainCell, int]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            """SELECT day - date '1970-01-01', activity, prev_activity, channel, contact, stat,
                      value, n FROM journey.quality_pain_day WHERE tenant_id = $1""",
            tenant,
        )
    return {tuple(r.values())[:7]: r["n"] for r in rows}


async def pain_examples(db: Database, tenant: str) -> dict[rules.ExampleCell, str]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            """SELECT day - date '1970-01-01', activity, channel, kind, example
               FROM journey.quality_pain_example WHERE tenant_id = $1""",
            tenant,
        )
    return {tuple(r.values())[:4]: r["example"] for r in rows}


async def refilled_examples(db: Database, tenant: str) -> dict[rules.ExampleCell, str]:
    """The tenant's examples as the migration and the bench fill them (SQL, from the rows)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute("DELETE FROM journey.quality_pain_example WHERE tenant_id = $1", tenant)
        await repo.fill_examples(conn, tenant)
    return await pain_examples(db, tenant)


def random_row(rng: random.Random, start_us: int) -> rules.QRow:
    contact = rng.random() < 0.8
    gap = lambda: rng.choice([None, rng.randint(0, 40 * D)])  # noqa: E731
    activity = rng.choice(["phone:inbound_call", "email:inbox", "phone:callback"])
    return rules.QRow(
        at_us=start_us + rng.randint(0, 13 * D),
        activity=activity,
        prev_activity=None,
        channel=activity.partition(":")[0],
        contact=contact,
        reason=rng.choice([None, "billing", "delivery"]),
        team=rng.choice([None, "t1"]),
        segment=(rng.choice([None, "18-24"]), None, rng.choice(["gold", "silver"]), None, "0-30d"),
        resolved=rng.choice([None, True, False]) if contact else None,
        transfers=0,
        abandon_at=None,
        abandon_wait_ms=0,
        queue_wait_ms=None,
        sentiment_milli=None,
        callback=0,
        next_any_us=gap() if contact else None,
        next_same_us=gap() if contact else None,
        reopen_us=gap() if contact else None,
        episode="e",
        episode_end=False,
        cross_unresolved=False,
    )


async def test_fcr_in_sql_equals_the_pure_rules(db):
    rng = random.Random(7)
    tenant = new_tenant()
    start = maps.to_us(BASE)
    rows = [random_row(rng, start) for _ in range(400)]
    keyed = [((tenant, uuid.uuid4(), f"s{i}"), r) for i, r in enumerate(rows)]
    policy = FcrPolicy.model_validate(
        {
            "default_window": "7d",
            "further_contact": "same_reason",
            "reopen_counts": False,
            "overrides": [
                {"reason": "billing", "window": "35d"},
                {"channel": "email", "segment": {"tier": "gold"}, "window": "2d"},
            ],
        }
    )
    as_of = start + 30 * D
    windows = (("1d", D), ("30d", 30 * D))
    async with db.session() as session:
        conn = await raw_connection(session)
        await save_rows(conn, keyed)
        q = fcr.FcrQuery(date(2025, 3, 3), date(2025, 3, 13), as_of, "reason", windows, {})
        body = await fcr.report(conn, tenant, q, policy)
    in_range = [r for r in rows if r.contact and r.at_us < start + 10 * D and r.at_us <= as_of]
    for group in body["groups"]:
        members = [r for r in in_range if (r.reason or "(none)") == group["key"]]
        assert group["contacts"] == len(members)
        for block in group["windows"]:
            outcomes = Counter()
            for r in members:
                seg = dict(zip(maps.SEGMENTS, r.segment, strict=True))
                w = (
                    policy.window_for(r.reason, r.channel, seg)
                    if block["window"] == "policy"
                    else dict(windows)[block["window"]]
                )
                gap = rules.further_gap(r, same=True, reopen_counts=False)
                outcomes[rules.judge(r.at_us, gap, w, as_of)] += 1
            assert block["resolved"] == outcomes[rules.RESOLVED]
            assert block["repeated"] == outcomes[rules.REPEATED]
            assert block["still_open"] == outcomes[rules.OPEN] + outcomes[rules.OPEN_REPEATED]
            assert block["already_repeated"] == outcomes[rules.OPEN_REPEATED]
    assert sum(g["contacts"] for g in body["groups"]) == body["total"]["contacts"] == len(in_range)


async def test_fcr_from_the_day_counts_equals_fcr_from_the_rows(db):
    """The fast path (day counts by ladder window) gives the very same report as the rows."""
    rng = random.Random(11)
    tenant = new_tenant()
    start = maps.to_us(BASE)
    rows = [random_row(rng, start) for _ in range(500)]
    keyed = [((tenant, uuid.uuid4(), f"s{i}"), r) for i, r in enumerate(rows)]
    async with db.session() as session:
        conn = await raw_connection(session)
        await save_rows(conn, keyed)
        cells = rules.fcr_cells(rows)
        await repo.apply_fcr_deltas(conn, [(tenant, c, n) for c, n in cells.items()])
        for policy_body in (
            {},
            {"further_contact": "same_reason", "reopen_counts": False,
             "overrides": [{"reason": "billing", "window": "35d"},
                           {"channel": "email", "window": "2d"},
                           {"reason": "delivery", "channel": "phone", "window": "14d"}]},
        ):  # fmt: skip
            policy = FcrPolicy.model_validate(policy_body)
            for by in (None, "reason", "channel", "agent_team"):
                for as_of_day in (5, 12, 40):
                    q = fcr.FcrQuery(
                        date(2025, 3, 3), date(2025, 3, 13), start + as_of_day * D, by,
                        (("1d", D), ("7d", 7 * D), ("30d", 30 * D)), {},
                    )  # fmt: skip
                    assert fcr.answerable(q, policy)
                    fast = await fcr.report_from_days(conn, tenant, q, policy)
                    assert fast == await fcr.report(conn, tenant, q, policy), (by, as_of_day)


def random_pain_row(rng: random.Random, start_us: int) -> rules.QRow:
    row = random_row(rng, start_us)
    abandon = rng.choice([None, None, "queue:billing", "ivr:main_menu"])
    return row._replace(
        prev_activity=rng.choice([None, "web:faq", "phone:inbound_call"]),
        transfers=rng.choice([0, 0, 1, 2, 3]),
        abandon_at=abandon,
        abandon_wait_ms=rng.randint(0, 600_000) if abandon else 0,
        queue_wait_ms=rng.choice([None, rng.randint(0, 900_000), 300_000, 300_001]),
        sentiment_milli=rng.choice([None, rng.randint(-1000, 1000), -300]),
        callback=rng.choice([0, 0, 1, 2]),
        episode=f"e{rng.randint(0, 50)}",
        episode_end=rng.random() < 0.3,
        cross_unresolved=rng.random() < 0.1,
    )


async def test_pain_points_and_health_from_the_day_counts_equal_the_row_scans(db):
    """The fast paths (pain-point and FCR day counts) give the very same reports as the rows,
    examples included; segment filters and other thresholds still answer from the rows."""
    rng = random.Random(13)
    tenant = new_tenant()
    start = maps.to_us(BASE)
    rows = [random_pain_row(rng, start) for _ in range(600)]
    keyed = [((tenant, uuid.uuid4(), f"s{i}"), r) for i, r in enumerate(rows)]
    async with db.session() as session:
        conn = await raw_connection(session)
        await save_rows(conn, keyed)
        fcr_cells, pain_cells = rules.fcr_cells(rows), rules.pain_cells(rows)
        await repo.apply_fcr_deltas(conn, [(tenant, c, n) for c, n in fcr_cells.items()])
        await repo.apply_pain_deltas(conn, [(tenant, c, n) for c, n in pain_cells.items()])
        found = rules.examples((str(k[1]), k[2], r) for k, r in keyed)
        await repo.apply_examples(conn, {(tenant, c): x for c, x in found.items()}, [])
    assert await refilled_examples(db, tenant) == found
    async with db.session() as session:
        conn = await raw_connection(session)
        policies = (
            FcrPolicy(),
            FcrPolicy.model_validate(
                {"further_contact": "same_reason", "reopen_counts": True,
                 "overrides": [{"reason": "billing", "window": "35d"},
                               {"channel": "email", "window": "2d"}]}
            ),
        )  # fmt: skip
        seen: set[str] = set()
        for policy in policies:
            for by in ("touchpoint", "channel"):
                for as_of_day, first, last in ((5, 3, 8), (12, 7, 14), (40, 4, 10)):
                    day = date(2025, 3, first), date(2025, 3, last)
                    for kind in (
                        None,
                        "repeat_contact",
                        "callback_not_completed",
                        "cross_channel_unresolved",
                    ):
                        q = pain.PainQuery(by, *day, start + as_of_day * D, {}, 300_000, kind)
                        assert pain.answerable(q, policy)
                        fast = await pain.report(conn, tenant, q, policy, limit=7)
                        slow = await pain.report(conn, tenant, q, policy, limit=7, counts=False)
                        assert fast == slow, (by, as_of_day, kind)
                        seen.update(p["kind"] for p in fast["pain_points"] if p["example"])
                    r = Range(*day, BASE + timedelta(days=as_of_day))
                    fast = await health.summary(conn, tenant, r, policy)
                    assert fast == await health.summary(conn, tenant, r, policy, counts=False)
        assert seen == set(pain.KINDS)
        q = pain.PainQuery("touchpoint", date(2025, 3, 3), date(2025, 3, 9), start + 9 * D,
                           {"tier": "gold"}, 300_000)  # fmt: skip
        assert not pain.answerable(q, policies[0])
        for other in (
            pain.PainQuery("edge", q.start, q.end, q.as_of_us, {}, 300_000),
            pain.PainQuery("touchpoint", q.start, q.end, q.as_of_us, {}, 120_000),
            pain.PainQuery("touchpoint", q.start, q.end, q.as_of_us + 1, {}, 300_000),
        ):
            assert not pain.answerable(other, policies[0])


async def test_a_withdrawn_example_is_recomputed_from_its_day_or_dropped(db):
    """A late event that makes the latest affected step unaffected, or a merge or split that
    moves it to another customer, leaves the cell the latest step still affected, or none."""
    tenant = new_tenant()
    start = maps.to_us(BASE)
    ann, bob = uuid.uuid4(), uuid.uuid4()
    base = random_row(random.Random(1), start)._replace(
        at_us=start + 10 * 3_600_000_000, contact=True, abandon_at="queue:billing",
        next_any_us=None, next_same_us=None, reopen_us=None,
    )  # fmt: skip
    rows: dict[uuid.UUID, dict[str, rules.QRow]] = {ann: {}, bob: {}}

    async def change(customer: uuid.UUID, new: dict[str, rules.QRow]) -> None:
        old = rows[customer]
        save, drop = rules.rows_difference(old, new)
        added, withdrawn = rules.examples_difference(old, new)
        async with db.session() as session:
            conn = await raw_connection(session)
            await maps_repo.delete_steps(conn, [(tenant, customer, k) for k in drop])
            await save_rows(conn, [((tenant, customer, k), r) for k, r in save])
            await repo.apply_examples(
                conn,
                {(tenant, c): rules.with_customer(x, str(customer)) for c, x in added.items()},
                [
                    ((tenant, c), rules.with_customer(x, str(customer)))
                    for c, x in withdrawn.items()
                ],
            )
        rows[customer] = new

    def expected() -> dict[rules.ExampleCell, str]:
        return rules.examples((str(c), k, r) for c, got in rows.items() for k, r in got.items())

    await change(ann, {"a1": base})
    await change(bob, {"b1": base._replace(at_us=base.at_us + 3_600_000_000)})
    cell = (base.at_us // D, base.activity, base.channel, "abandon")
    assert (await pain_examples(db, tenant))[cell].split(rules.EXAMPLE_SEP)[1] == str(bob)
    # a late event: bob's step was not abandoned after all
    await change(bob, {"b1": rows[bob]["b1"]._replace(abandon_at=None)})
    assert await pain_examples(db, tenant) == expected()
    assert (await pain_examples(db, tenant))[cell].split(rules.EXAMPLE_SEP)[1] == str(ann)
    # a split moves ann's step to bob (a new customer here): the cell follows it
    moved = rows[ann]["a1"]
    await change(ann, {})
    assert cell not in await pain_examples(db, tenant)
    await change(bob, {**rows[bob], "a1": moved})
    assert await pain_examples(db, tenant) == expected()
    assert await refilled_examples(db, tenant) == expected()
