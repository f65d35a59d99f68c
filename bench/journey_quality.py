"""Journey quality benchmark (issue 9): pain points, FCR for 3 windows and the health summary
over the journey-map benchmark's log (``_map_log.customer_events``: >= 2,000,000 steps), each
call also given queue waits, transfers, contact reasons and agent-declared resolution.

(a) the worker's cost: the map benchmark's build (real applier, compactor alongside) of
BENCH_QUALITY_WORKER_CUSTOMERS customers with journey quality's rows off and on (off, on, on,
off); (b) the log: BENCH_QUALITY_DERIVED customers' quality rows derived with the compactor's own
functions (``maps.rules.build_steps``, ``quality.rules.quality_rows``; CPU per customer next to
the map's own derivation), loaded with COPY and copied under other customer ids up to
BENCH_QUALITY_CUSTOMERS; (c) the API's latency on it (p99 target 500 ms):
``GET /v1/pain-points``, ``GET /v1/fcr?by=reason&windows=1d,7d,30d`` and
``GET /v1/journey-health``, on a 28-day range and on the whole log, with a policy of overrides.

Environment: BENCH_QUALITY_CUSTOMERS (200,000: 10 steps each), BENCH_QUALITY_DERIVED (10,000),
BENCH_QUALITY_WORKER_CUSTOMERS (3,000), BENCH_QUALITY_DURATION (15 s per endpoint),
BENCH_QUALITY_PHASES (build,parts,api,worker; ``parts``: where a pain-point request's time
goes, timed in process, BENCH_QUALITY_PART_RUNS times per range). Prints figures, then one JSON
line.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _journey_stack import Stack, machine, run_load  # noqa: E402
from _map_log import build as build_map_log  # noqa: E402
from _map_log import customer_events  # noqa: E402

from services.journey.maps import maintain  # noqa: E402
from services.journey.maps import rules as maps  # noqa: E402
from services.journey.quality import repository as quality_repo  # noqa: E402
from services.journey.quality.policy import FcrPolicy  # noqa: E402
from services.journey.quality.rules import fcr_cells, pain_cells, quality_rows  # noqa: E402

try:
    from services.journey.quality.rules import examples, examples_difference  # noqa: E402
except ImportError:  # before the pain-point examples were kept
    examples = examples_difference = None  # type: ignore[assignment]
from shared.auth.service import create_key, ensure_tenant  # noqa: E402
from shared.db import Database, raw_connection  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_QUALITY_CUSTOMERS", "200000"))
# Customers derived in Python; the rest are copies of their rows under other customer ids (the
# derivation is pure CPU, ~1-2 ms a customer: minutes on a shared machine, hours under load).
DERIVED = min(CUSTOMERS, int(os.environ.get("BENCH_QUALITY_DERIVED", "10000")))
DURATION = float(os.environ.get("BENCH_QUALITY_DURATION", "15"))
WORKER_CUSTOMERS = int(os.environ.get("BENCH_QUALITY_WORKER_CUSTOMERS", "3000"))
PHASES = os.environ.get("BENCH_QUALITY_PHASES", "build,parts,api,worker").split(",")
PART_RUNS = int(os.environ.get("BENCH_QUALITY_PART_RUNS", "20"))
# survey responses stored as events (the health summary's experience slot reads them)
SURVEYS = int(os.environ.get("BENCH_QUALITY_SURVEYS", "200000"))
TENANT = "bench-quality"
REASONS = ("billing", "delivery", "login", "plan_change", "outage")
COLUMNS = (
    "tenant_id", "customer_id", "step_key", "at_us", "day", "activity", "prev_activity",
    "channel", "contact", "reason", "team", "age_group", "region", "tier", "lifecycle_stage",
    "tenure", "resolved", "transfers", "abandon_at", "abandon_wait_ms", "queue_wait_ms",
    "sentiment_milli", "callback", "next_any_us", "next_same_us", "reopen_us", "episode",
    "episode_end", "cross_unresolved", "summary",
)  # fmt: skip
# (the quality facts are columns of the step log's rows, ``journey.map_step``)


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def _fact(raw: dict[str, Any], t: int, kind: str, dt_s: float, **data: Any) -> maps.Fact:
    iid = raw["data"]["interaction_id"]
    eid = f"{raw['id']}-{kind}-{dt_s:.3f}"
    return maps.Fact(eid, kind, t + round(dt_s * 1e6), {"interaction_id": iid, **data})


def facts_of(i: int, base: datetime) -> list[maps.Fact]:
    """The map benchmark's customer, with a call centre's detail added to its contacts."""
    rng = random.Random(-i - 1)
    out: list[maps.Fact] = []
    for raw in customer_events(i, TENANT, base):
        data = raw["data"]
        t = maps.to_us(datetime.fromisoformat(raw["time"]))
        out.append(maps.Fact(raw["id"], raw["type"], t, data))
        if raw["type"] not in ("contact.started", "message.received"):
            continue
        if not data.get("interaction_id"):
            continue
        data["contact_reason"] = rng.choice(REASONS)
        if data.get("channel") == "phone":
            wait = rng.expovariate(1 / 150)
            out.append(_fact(raw, t, "contact.queued", 20, queue="care_queue"))
            team = rng.choice(("tier1", "tier2"))
            out.append(_fact(raw, t, "agent.joined", 20 + wait, agent_id="a1", team=team))
            for k in range(rng.choice((0, 0, 0, 1, 1, 2))):
                out.append(_fact(raw, t, "contact.transferred", 30 + wait + k, to_team="spec"))
            out.append(_fact(raw, t, "contact.ended", 600 + wait, resolved=rng.random() < 0.7))
        elif data.get("channel") == "web_chat":
            out.append(_fact(raw, t, "contact.ended", 900, resolved=rng.random() < 0.6))
    return out


async def build(db: Database, base: datetime) -> dict[str, Any]:
    started = time.perf_counter()
    window, bands = maps.DEFAULT_WINDOW_US, maps.DEFAULT_TENURE_DAYS
    spent = {"map": 0.0, "quality": 0.0, "examples": 0.0}
    batch: list[tuple[Any, ...]] = []
    steps_total = 0
    cells: Counter[Any] = Counter()
    pains: Counter[Any] = Counter()

    async def flush() -> None:
        async with db.session() as session:
            conn = await raw_connection(session)
            await conn.copy_records_to_table(
                "map_step", schema_name="journey", records=batch, columns=COLUMNS
            )
        batch.clear()

    for i in range(DERIVED):
        facts = facts_of(i, base)
        steps = maps.build_steps(facts)
        profile = maps.new_profile()
        for f in facts:
            maps.fold_profile(profile, f)
        t0 = time.perf_counter()
        maps.derive(steps.values(), profile, window_us=window, bands=bands)
        t1 = time.perf_counter()
        rows = quality_rows(steps.values(), profile, window_us=window, bands=bands)
        t2 = time.perf_counter()
        customer = uuid.UUID(int=i + 1)
        if examples is not None:  # what the compactor adds per customer for the examples
            examples_difference({}, rows)
        t3 = time.perf_counter()
        spent["map"] += t1 - t0
        spent["quality"] += t2 - t1
        spent["examples"] += t3 - t2
        for key, r in rows.items():
            batch.append(
                (
                    TENANT,
                    customer,
                    key,
                    r.at_us,
                    maps.as_date(maps.day_of(r.at_us)),
                    r.activity,
                    r.prev_activity,
                    r.channel,
                    r.contact,
                    r.reason,
                    r.team,
                    *r.segment,
                    r.resolved,
                    r.transfers,
                    r.abandon_at,
                    r.abandon_wait_ms,
                    r.queue_wait_ms,
                    r.sentiment_milli,
                    r.callback,
                    r.next_any_us,
                    r.next_same_us,
                    r.reopen_us,
                    r.episode,
                    r.episode_end,
                    r.cross_unresolved,
                    orjson.dumps(steps[key]).decode(),
                )  # fmt: skip
            )
        steps_total += len(rows)
        cells.update(fcr_cells(rows.values()))
        pains.update(pain_cells(rows.values()))
        if len(batch) >= 50_000:
            await flush()
        if i and i % 20_000 == 0:
            log(f"  {i:,} customers, {steps_total:,} steps")
    if batch:
        await flush()
    copies = -(-CUSTOMERS // DERIVED)
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.copy_records_to_table(
            "quality_fcr_day",
            schema_name="journey",
            records=[
                (TENANT, maps.as_date(c[0]), *c[1:], n * copies) for c, n in cells.items()
            ],
            columns=("tenant_id", "day", "mode", "reason", "activity", "team", "declared",
                     "threshold", "n"),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "quality_pain_day",
            schema_name="journey",
            records=[(TENANT, maps.as_date(c[0]), *c[1:], n * copies) for c, n in pains.items()],
            columns=("tenant_id", "day", "activity", "prev_activity", "channel", "contact",
                     "stat", "value", "n"),
        )  # fmt: skip
        if copies > 1:
            columns = ", ".join(COLUMNS[2:])
            await conn.execute(
                f"""INSERT INTO journey.map_step (tenant_id, customer_id, {columns})
                    SELECT tenant_id, md5(customer_id::text || '/' || k)::uuid, {columns}
                    FROM journey.map_step CROSS JOIN generate_series(1, $2) AS k
                    WHERE tenant_id = $1""",  # noqa: S608 - constants
                TENANT,
                copies - 1,
            )
        steps_total = await conn.fetchval(
            "SELECT count(*) FROM journey.map_step WHERE tenant_id = $1", TENANT
        )
        # the pain-point examples of every row (copies included), as the migration fills them
        if await conn.fetchval("SELECT to_regclass('journey.quality_pain_example') IS NOT NULL"):
            await quality_repo.fill_examples(conn, TENANT)
            await conn.execute("ANALYZE journey.quality_pain_example")
        # survey responses over the log's two busy months, as stored events of realistic size
        await conn.execute(
            """INSERT INTO journey.event (tenant_id, event_id, customer_id, type, time,
                   identifier_keys, outcome, rule, envelope)
               SELECT $1::text, 'survey-' || i, md5(i::text)::uuid, 'survey.responded', t,
                      ARRAY['email:' || md5(i::text)], 'matched', 'deterministic',
                      jsonb_build_object(
                          'specversion', '1.0', 'id', 'survey-' || i, 'type', 'survey.responded',
                          'source', 'bench/surveys', 'tenant_id', $1::text, 'time', t,
                          'identifiers', jsonb_build_array(jsonb_build_object(
                              'type', 'email', 'value', md5(i::text) || '@customer.test',
                              'verified_by', 'login')),
                          'data', jsonb_build_object(
                              'survey', kind, 'score', CASE kind WHEN 'csat' THEN 1 + i % 5
                                                      WHEN 'nps' THEN i % 11 ELSE 1 + i % 7 END,
                              'about_interaction_id', 'call-' || i, 'channel', 'sms'))
               FROM generate_series(1, $2::int) AS i
               CROSS JOIN LATERAL (SELECT (ARRAY['csat', 'nps', 'csat', 'nps', 'ces'])[1 + i % 5]
                                          AS kind,
                                          timestamptz '2026-07-01'
                                          + (i::bigint * 5270400 / $2::int) * interval '1 s'
                                          AS t) x""",
            TENANT,
            SURVEYS,
        )
        if await conn.fetchval("SELECT to_regclass('journey.experience_survey_day') IS NOT NULL"):
            from services.journey.experience import counts as survey_counts

            await survey_counts.fill(conn, TENANT)  # as the migration fills them
            await conn.execute("ANALYZE journey.experience_survey_day")
        await conn.execute("ANALYZE journey.event")
        await conn.execute("ANALYZE journey.map_step")
        await conn.execute("ANALYZE journey.quality_fcr_day")
        await conn.execute("ANALYZE journey.quality_pain_day")
    return {
        "steps": steps_total,
        "derived_customers": DERIVED,
        "copies": copies,
        "seconds": time.perf_counter() - started,
        # what re-deriving one customer costs the compactor (it derives before and after)
        "map_derive_us_per_customer": spent["map"] / DERIVED * 1e6,
        "quality_rows_us_per_customer": spent["quality"] / DERIVED * 1e6,
        "examples_us_per_customer": spent["examples"] / DERIVED * 1e6,
    }


async def parts(db: Database, policy: FcrPolicy) -> dict[str, Any]:
    """Where ``GET /v1/pain-points`` spends its time, in process (no HTTP): the report's parts
    wrapped with timers (whichever of them the code has), PART_RUNS calls per range; wall
    clock and this process's CPU per part (the database's time is wall minus CPU)."""
    from datetime import date

    from services.journey.quality import fcr, pain

    spent: dict[str, list[float]] = {}
    originals: dict[tuple[Any, str], Any] = {}

    def timed(module: Any, name: str, label: str) -> None:
        inner = getattr(module, name, None)
        if inner is None:
            return
        originals[(module, name)] = inner

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                spent.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(module, name, wrapper)

    timed(pain, "_counts", "day counts (incl. repeats)")
    timed(pain, "_repeats", "repeat contacts (FCR day counts)")
    timed(fcr, "report_from_days", "one FCR day-count report")
    timed(pain, "_examples", "examples")
    as_of = datetime(2026, 11, 30, tzinfo=UTC)
    as_of_us = int(as_of.timestamp()) * 1_000_000
    ranges = {
        "28d": (date(2026, 8, 1), date(2026, 8, 29)),
        "whole": (date(2026, 7, 1), date(2026, 11, 30)),
    }
    out: dict[str, Any] = {}
    try:
        for label, (start, end) in ranges.items():
            q = pain.PainQuery("touchpoint", start, end, as_of_us, {}, 300_000)
            spent.clear()
            totals = []
            cpu0 = time.process_time()
            async with db.session() as session:
                conn = await raw_connection(session)
                for _ in range(PART_RUNS):
                    t0 = time.perf_counter()
                    await pain.report(conn, TENANT, q, policy, limit=20)
                    totals.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
            totals.sort()
            figures = {
                "report_ms_median": totals[len(totals) // 2] * 1000,
                "report_ms_max": totals[-1] * 1000,
                "process_cpu_ms_per_report": cpu / PART_RUNS * 1000,
                "parts_ms_median": {
                    k: sorted(v)[len(v) // 2] * 1000 for k, v in sorted(spent.items())
                },
                "calls_per_report": {k: len(v) / PART_RUNS for k, v in sorted(spent.items())},
            }
            out[label] = figures
            log(f"  parts, {label}: report median {figures['report_ms_median']:.0f} ms")
            for k, v in figures["parts_ms_median"].items():
                log(f"    {k}: {v:.0f} ms median ({figures['calls_per_report'][k]:g} a report)")
    finally:
        for (module, name), inner in originals.items():
            setattr(module, name, inner)
    try:
        from services.journey.experience import health as experience
    except ImportError:  # before the slot existed
        return out
    from services.journey.quality.schemas import Range

    for label, (start, end) in ranges.items():
        r = Range(start, end, as_of)
        before = Range(start - (end - start), start, as_of)
        took = []
        async with db.session() as session:
            conn = await raw_connection(session)
            for _ in range(PART_RUNS):
                t0 = time.perf_counter()
                got = await experience.section(conn, TENANT, r, before)
                took.append(time.perf_counter() - t0)
        took.sort()
        n = sum(got[k]["n"] + got[k]["previous_n"] for k in ("csat", "nps", "ces") if k in got)
        out[label]["experience_slot_ms_median"] = took[len(took) // 2] * 1000
        out[label]["experience_slot_responses"] = n
        log(f"    experience slot: {took[len(took) // 2] * 1000:.0f} ms median ({n:,} responses)")
    return out


async def latency(port: int, key: str, path: str) -> dict[str, Any]:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "paths": [path],
        "headers": {"Authorization": f"Bearer {key}"},
        "concurrency": 2,
        "duration": DURATION,
        "rate": None,
    }
    return await asyncio.to_thread(run_load, spec)


async def worker_cost(stack: Stack, *, quality: bool) -> dict[str, Any]:
    """The map benchmark's build (real applier, compactor alongside, in this process) of
    WORKER_CUSTOMERS customers, with journey quality's rows on or off."""
    original = maintain.quality.rows_of
    if not quality:
        maintain.quality.rows_of = lambda *_args: {}  # type: ignore[assignment]
    try:
        spec = {
            "settings": {"database_url": stack.settings.dsn, "env": "test", "log_json": False},
            "base": datetime(2026, 7, 1, tzinfo=UTC).isoformat(),
            "tenant": f"bench-qw-{uuid.uuid4().hex[:6]}",
            "first": 0,
            "last": WORKER_CUSTOMERS,
        }
        got: dict[str, Any] = await build_map_log(spec)
    finally:
        maintain.quality.rows_of = original  # type: ignore[assignment]
    got["events_per_s"] = got["events"] / got["total_s"]
    return got


async def main() -> None:
    stack = Stack()
    figures: dict[str, Any] = {"machine": machine(), "customers": CUSTOMERS}
    try:
        await stack.prepare()
        db = Database(stack.settings.dsn, pool_size=2, application_name="bench")
        async with db.session() as session:
            await ensure_tenant(session, TENANT)
            key, _ = await create_key(
                session, tenant_id=TENANT, name="bench", scopes=["analytics:read"]
            )
            policy = FcrPolicy.model_validate(
                {
                    "default_window": "7d",
                    "overrides": [
                        {"reason": "billing", "window": "35d"},
                        {"channel": "email", "window": "3d"},
                        {"reason": "outage", "channel": "phone", "window": "14d"},
                    ],
                }
            )
            await quality_repo.save_policy(await raw_connection(session), TENANT, policy)
        base = datetime(2026, 7, 1, tzinfo=UTC)  # fixed: the same log on every run
        if "worker" in PHASES:
            runs = []
            for on in (False, True, True, False):
                got = await worker_cost(stack, quality=on)
                runs.append({"quality": on, **got})
                log(
                    f"  worker (applier + compactor), quality {'on' if on else 'off'}: "
                    f"{got['events_per_s']:,.0f} events/s ({got['events']:,} events)"
                )
            figures["worker"] = runs
        if "build" not in PHASES:
            return
        log(f"deriving quality rows: {DERIVED:,} customers x 10 steps, copied to {CUSTOMERS:,} …")
        built = await build(db, base)
        figures["build"] = built
        log(
            f"built {built['steps']:,} steps in {built['seconds']:.0f} s; per customer the "
            f"compactor's map derive {built['map_derive_us_per_customer']:.0f} us, quality rows "
            f"{built['quality_rows_us_per_customer']:.0f} us, its pain-point examples "
            f"{built['examples_us_per_customer']:.0f} us"
        )
        if "parts" in PHASES:
            figures["parts"] = await parts(db, policy)
        await db.dispose()
        if "api" not in PHASES:
            return
        port = stack.serve()
        as_of = "2026-11-30T00:00:00%2B00:00"
        month = f"from=2026-08-01&to=2026-08-29&as_of={as_of}"
        whole = f"from=2026-07-01&to=2026-11-30&as_of={as_of}"
        paths = {
            "pain_points_28d": f"/v1/pain-points?{month}",
            "fcr_3_windows_28d": f"/v1/fcr?by=reason&windows=1d,7d,30d&{month}",
            "health_28d": f"/v1/journey-health?{month}",
            "pain_points_whole": f"/v1/pain-points?{whole}",
            "fcr_3_windows_whole": f"/v1/fcr?by=reason&windows=1d,7d,30d&{whole}",
            "health_whole": f"/v1/journey-health?{whole}",
        }
        figures["api"] = {}
        only = os.environ.get("BENCH_QUALITY_PATHS")
        for name, path in paths.items():
            if only and name not in only.split(","):
                continue
            got = await latency(port, key, path)
            figures["api"][name] = got
            log(f"  {name}: p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms")
    finally:
        stack.close()
        print(json.dumps(figures, default=str))


if __name__ == "__main__":
    asyncio.run(main())
