"""Counting a scenario's outcome at every stage, and comparing it with a fault-free run.

- ``Traffic``: the simulator's records for one tenant (same seed and window in every scenario,
  so every scenario's input is the baseline's, under its own tenant).
- ``settled``: waits (never sleeps) until the pipeline is quiet: every consumer group has
  committed everything, the notifier's outbox, the engagement relay and the map compactor
  have nothing pending, twice in a row.
- ``Outcome``: stored in ingest, applied in journey, scored in alerts (event ids in the score
  history, a repeat is a double count), delivered per channel (the receiver's count by
  Idempotency-Key), and what each stage lost or duplicated.
- ``Snapshot``: every customer's context and the journey map, with the tenant and customer ids
  replaced by stable labels, for equality with the baseline's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.drain import Group, GroupProbe
from services.simulator.generator import generate_keyed
from services.simulator.producer import send
from services.simulator.records import Record, plan
from shared.db import Database
from tests.faults.receiver import Receiver
from tests.faults.stack import Stack

SEED = 13
CUSTOMERS = 8  # ~ 200 events: a few batches per stage


@dataclass
class Traffic:
    tenant: str
    records: list[Record]

    @classmethod
    def simulated(
        cls, tenant: str, start: datetime, *, customers: int = CUSTOMERS, seed: int = SEED
    ) -> Traffic:
        events = generate_keyed(customers=customers, seed=seed, tenant=tenant, start=start, days=30)
        # In time order across customers (each customer's own events already are): an account's
        # context folds several people's events, and out of time order the result depends on
        # where batches happen to split, with or without a fault (docs/reliability.md).
        records = sorted(plan(events, seed=seed, tenant=tenant), key=event_time)
        return cls(tenant, records)

    @property
    def event_ids(self) -> set[str]:
        return {event_id(r) for r in self.records if not r.kind.startswith("poison")}

    async def send(
        self, producer: AIOKafkaProducer, topic: str, records: Sequence[Record] | None = None
    ) -> None:
        await send(producer, topic, self.records if records is None else records)


def event_time(record: Record) -> str:
    for name, value in record.headers:
        if name == "ce_time":
            return value.decode()
    try:
        return str(orjson.loads(record.value).get("time") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def event_id(record: Record) -> str:
    for name, value in record.headers:
        if name == "ce_id":
            return value.decode()
    found: str = orjson.loads(record.value)["id"]
    return found


# --- waiting for a quiet pipeline -----------------------------------------------------------


async def _scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.session() as session:
        return await session.scalar(text(sql), params)


async def pending_work(db: Database, tenant: str) -> dict[str, int]:
    """Work stored but not yet done downstream of the consumers (alerts' outbox, the
    engagement relay, journey's outbox, the map compactor)."""
    return {
        "outbox": int(
            await _scalar(
                db,
                "SELECT count(*) FROM alerts.outbox WHERE tenant_id = :t AND status = 'pending'",
                t=tenant,
            )
        ),
        "relay": int(
            await _scalar(
                db,
                "SELECT count(*) FROM alerts.engagement_change "
                "WHERE tenant_id = :t AND version > published_version",
                t=tenant,
            )
        ),
        "journey_outbox": int(
            await _scalar(db, "SELECT count(*) FROM journey.outbox WHERE tenant_id = :t", t=tenant)
        ),
        "map": int(
            await _scalar(
                db, "SELECT count(*) FROM journey.map_pending WHERE tenant_id = :t", t=tenant
            )
        ),
    }


def groups(stack: Stack) -> list[Group]:
    return [
        Group("ingest", stack.group("ingest"), (stack.topic("raw"),)),
        Group("journey", stack.group("journey"), (stack.topic("normalized"),)),
        Group("alerts", stack.group("alerts"), (stack.topic("activity"),)),
        Group("engagement", stack.group("journey_engagement"), (stack.topic("engagement"),)),
    ]


async def settled(
    stack: Stack,
    db: Database,
    tenant: str,
    *,
    timeout: float = 400,
    expect_stored: int | None = None,
) -> None:
    """Until every group's lag is 0 and nothing is pending, twice in a row (0.3 s apart)."""
    deadline = time.monotonic() + timeout
    probes = [GroupProbe(stack.env["KAFKA_BOOTSTRAP_SERVERS"], g) for g in groups(stack)]
    for probe in probes:
        await probe.start()
    last: dict[str, int] = {}
    try:
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"the pipeline did not settle in {timeout}s: {last}")
            try:
                last = {p.group.service: await p.lag() for p in probes}
            except TimeoutError:  # the broker slow to answer (a loaded machine): not quiet yet
                last, quiet = {"broker_timeout": 1}, 0
                continue
            last.update(await pending_work(db, tenant))
            if expect_stored is not None:
                last["unstored"] = expect_stored - await stored_count(db, tenant)
            quiet = quiet + 1 if not any(last.values()) else 0
            await asyncio.sleep(0.3)
    finally:
        for probe in probes:
            await probe.stop()


async def stored_count(db: Database, tenant: str) -> int:
    return int(
        await _scalar(db, "SELECT count(*) FROM ingest.event WHERE tenant_id = :t", t=tenant)
    )


# --- counting -------------------------------------------------------------------------------


# For ``count``: a tenant's merges (a split keeps its merge's row), a customer's facts.
MERGES = "SELECT count(*) FROM journey.merge WHERE tenant_id = :t"
FACTS = (
    "SELECT count(*) FROM journey.event WHERE tenant_id = :t AND type = 'fact.collected' "
    "AND customer_id = CAST(:c AS uuid)"
)


async def count(db: Database, sql: str, **params: Any) -> int:
    """A ``SELECT count(*) …`` as an int."""
    return int(await _scalar(db, sql, **params) or 0)


async def person_customers(db: Database, tenant: str, n: int) -> list[str]:
    """``n`` active customers of ``tenant`` known by an email (people, not accounts)."""
    async with db.session() as session:
        found = (
            await session.execute(
                text(
                    "SELECT c.id::text FROM journey.customer c WHERE c.tenant_id = :t "
                    "AND c.status = 'active' AND EXISTS (SELECT 1 FROM journey.identifier i "
                    "WHERE i.tenant_id = c.tenant_id AND i.customer_id = c.id "
                    "AND i.id_type = 'email') ORDER BY c.id LIMIT :n"
                ),
                {"t": tenant, "n": n},
            )
        ).scalars()
        return list(found)


async def scored_activities(db: Database, tenant: str, **patterns: str) -> dict[str, int]:
    """How many activities alerts' exactly-once ledger holds for each ``LIKE`` pattern
    (``merged:<survivor>:%:<merged>``, ``split:<customer>:%``, ``event:<id>``)."""
    return {
        name: await count(
            db,
            "SELECT count(*) FROM alerts.processed_activity WHERE tenant_id = :t "
            "AND activity_id LIKE :k",
            t=tenant,
            k=like,
        )
        for name, like in patterns.items()
    }


@dataclass
class Commands:
    """Three people of a tenant for the command scenarios: a manual merge of ``merged`` into
    ``survivor``, its split, and agents' facts of ``other``; what the commands left, counted
    against what was there before them."""

    db: Database
    tenant: str
    survivor: str
    merged: str
    other: str
    merges_before: int  # identity resolution's own
    facts_before: int  # the simulator's

    @classmethod
    async def prepare(cls, db: Database, tenant: str) -> Commands:
        survivor, merged, other = await person_customers(db, tenant, 3)
        return cls(
            db,
            tenant,
            survivor,
            merged,
            other,
            await count(db, MERGES, t=tenant),
            await count(db, FACTS, t=tenant, c=other),
        )

    async def effects(self, fact_ids: Sequence[str]) -> dict[str, int]:
        """New merges and facts in journey; in alerts' ledger, the merge's and the split's
        activities and each fact's (``fact1``, ``fact2`` … in the order of ``fact_ids``)."""
        db, tenant = self.db, self.tenant
        return {
            "merges": await count(db, MERGES, t=tenant) - self.merges_before,
            "facts": await count(db, FACTS, t=tenant, c=self.other) - self.facts_before,
            **await scored_activities(
                db,
                tenant,
                merged=f"merged:{self.survivor}:%:{self.merged}",
                split=f"split:{self.survivor}:%",
                **{f"fact{i}": f"event:{e}" for i, e in enumerate(fact_ids, 1)},
            ),
        }


@dataclass
class Outcome:
    sent: int
    stored: int
    applied: int
    scored: int
    scored_twice: int
    alerts: int
    delivered: int  # distinct Idempotency-Keys the receiver accepted
    redelivered: int  # accepted again with a key it had already accepted (deduped by it)
    lost: dict[str, int] = field(default_factory=dict)
    duplicated: dict[str, int] = field(default_factory=dict)

    def row(self, scenario: str) -> str:
        lost = sum(self.lost.values())
        dup = sum(self.duplicated.values())
        return (
            f"| {scenario} | {self.sent} | {self.stored} | {self.applied} | {self.scored} | "
            f"{self.alerts} | {self.delivered} | {dup} | {lost} |"
        )


async def outcome(
    db: Database,
    traffic: Traffic,
    receiver: Receiver | None,
    *,
    expected_ids: set[str] | None = None,
) -> Outcome:
    tenant = traffic.tenant
    ids = traffic.event_ids if expected_ids is None else expected_ids
    async with db.session() as session:
        stored = set(
            (
                await session.execute(
                    text("SELECT event_id FROM ingest.event WHERE tenant_id = :t"), {"t": tenant}
                )
            ).scalars()
        )
        journey_rows = (
            await session.execute(
                text("SELECT event_id, customer_id IS NOT NULL FROM journey.event "
                     "WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).all()  # fmt: skip
        applied = {e for e, _ in journey_rows}
        # Only an event attributed to a customer becomes an activity (account-level usage
        # without a person, and the like, are applied but not scored).
        scorable = {e for e, attributed in journey_rows if attributed} & ids
        # alerts' exactly-once ledger says which activities were scored; the score history
        # lists the events behind each score change: one listed twice was counted twice.
        scored = {
            a.removeprefix("event:")
            for a in (
                await session.execute(
                    text(
                        "SELECT activity_id FROM alerts.processed_activity "
                        "WHERE tenant_id = :t AND activity_id LIKE 'event:%'"
                    ),
                    {"t": tenant},
                )
            ).scalars()
        }
        counted = Counter(
            (
                await session.execute(
                    text(
                        "SELECT jsonb_array_elements_text(event_ids) FROM alerts.score_history "
                        "WHERE tenant_id = :t"
                    ),
                    {"t": tenant},
                )
            ).scalars()
        )
        alerts = [
            (str(a), str(c), e)
            for a, c, e in (
                await session.execute(
                    text(
                        "SELECT o.alert_id, o.channel_id, o.event FROM alerts.outbox o "
                        "WHERE o.tenant_id = :t"
                    ),
                    {"t": tenant},
                )
            ).all()
        ]
        opened = int(
            await session.scalar(
                text("SELECT count(*) FROM alerts.alert WHERE tenant_id = :t"), {"t": tenant}
            )
            or 0
        )
    expected_keys = {f"{a}:{c}" + (":resolved" if e == "resolved" else "") for a, c, e in alerts}
    accepted = receiver.accepted_for(expected_keys) if receiver else Counter()
    lost = {
        "stored": len(ids - stored),
        "applied": len(ids - applied),
        "scored": len(scorable - scored),
        "delivered": len(expected_keys - set(accepted)) if receiver else 0,
    }
    duplicated = {
        "stored": len(stored - ids),  # ids never sent (the primary key forbids two copies)
        "scored": sum(n - 1 for n in counted.values() if n > 1),
    }
    return Outcome(
        sent=len(ids),
        stored=len(stored & ids),
        applied=len(applied & ids),
        scored=len(scored & ids),
        scored_twice=duplicated["scored"],
        alerts=opened,
        delivered=len(set(accepted)),
        redelivered=sum(n - 1 for n in accepted.values() if n > 1),
        lost=lost,
        duplicated=duplicated,
    )


# --- comparing with a fault-free run --------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Written when processed, not derived from the input: differ between any two runs.
VOLATILE = {"updated_at", "version", "scored_at", "changed_at", "applied_at", "generated_at"}
# The engagement score decays with the wall clock between two runs (half-lives of days):
# compared to within this many points; everything else exactly.
SCORE_TOLERANCE = 0.5
# An account's own context folds the events of several people and the account's usage; where
# the journey worker's batches split them changes it even between two fault-free runs (see
# docs/reliability.md), so it is counted (stored/applied/scored) but not compared.
BATCH_DEPENDENT = ("account_id:",)
# A sensitive fact's value is stored sealed (encrypted with a random nonce): the same fact
# seals differently in every run, so only its presence is compared.
SEALED = "wpenc1:"


@dataclass
class Snapshot:
    contexts: dict[str, Any]  # customer label → context document
    scores: dict[str, float]
    alerts: set[str]  # customer labels with an open churn alert

    def differences(self, other: Snapshot) -> list[str]:
        found = []
        labels = self.contexts.keys() | other.contexts.keys()
        for label in sorted(labels):
            if label.startswith(BATCH_DEPENDENT):
                continue
            mine, theirs = self.contexts.get(label), other.contexts.get(label)
            if mine != theirs:
                found.append(f"context of {label}: {_first_difference(mine, theirs)}")
        for label in sorted(self.scores.keys() | other.scores.keys()):
            if label.startswith(BATCH_DEPENDENT):
                continue
            a, b = self.scores.get(label), other.scores.get(label)
            if a is None or b is None or abs(a - b) > SCORE_TOLERANCE:
                found.append(f"score of {label}: {a} != {b}")
        if self.alerts != other.alerts:
            found.append(f"alerted customers: {sorted(self.alerts ^ other.alerts)}")
        return found


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or '.'}: {str(a)[:300]} != {str(b)[:300]}"


def _strip(value: Any, labels: dict[str, str], tenant: str) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip(v, labels, tenant)
            for k, v in value.items()
            if k not in VOLATILE and k not in ("engagement", "score")
        }
    if isinstance(value, list):
        return [_strip(v, labels, tenant) for v in value]
    if isinstance(value, str):
        if value.startswith(SEALED):
            return "<sealed>"
        value = value.replace(tenant, "<tenant>")
        return _UUID.sub(lambda m: labels.get(m.group(0), "<id>"), value)
    return value


async def snapshot(db: Database, tenant: str) -> Snapshot:
    """Every active customer's context, labelled by its smallest identifier."""
    async with db.session() as session:
        holders = (
            await session.execute(
                text(
                    "SELECT customer_id::text, min(id_type || ':' || value) FROM journey.identifier"
                    " WHERE tenant_id = :t GROUP BY customer_id"
                ),
                {"t": tenant},
            )
        ).all()
        labels = {c: label.replace(tenant, "<tenant>") for c, label in holders}
        docs = (
            await session.execute(
                text(
                    "SELECT x.customer_id::text, x.doc::text FROM journey.context x "
                    "JOIN journey.customer c ON c.tenant_id = x.tenant_id AND c.id = x.customer_id "
                    "WHERE x.tenant_id = :t AND c.status = 'active'"
                ),
                {"t": tenant},
            )
        ).all()
        states = (
            await session.execute(
                text(
                    "SELECT customer_id, score, open_alert_id IS NOT NULL "
                    "FROM alerts.customer_state WHERE tenant_id = :t AND merged_into IS NULL"
                ),
                {"t": tenant},
            )
        ).all()
    contexts = {labels.get(c, c): _strip(orjson.loads(doc), labels, tenant) for c, doc in docs}
    scores = {labels.get(c, c): float(s) for c, s, _ in states if s is not None}
    alerted = {labels.get(c, c) for c, _, a in states if a}
    return Snapshot(contexts, scores, alerted)
