"""Apply one chunk of normalized events in one transaction: resolve identity, store, fold context.

Exactly-once: the event table's primary key (tenant, event id) is checked first and written in
the same transaction as the effects. Two workers: advisory locks on every identifier key of the
chunk (sorted) serialize events of one identity; context rows are locked in key order, in one
statement (a chunk that merges locks all it may write before its first merge); a chunk that finds
one of its customers merged meanwhile is retried (``StaleChunk``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg
import orjson

from services.journey.config import JourneySettings
from services.journey.context import repository as context_repo
from services.journey.context import rules as ctx
from services.journey.identity import merges
from services.journey.identity import repository as repo
from services.journey.identity.rules import (
    Claim,
    Holder,
    MergeStep,
    Outcome,
    Resolution,
    claim_of,
    new_customer_id,
    resolve,
)
from services.journey.maps import repository as maps_repo
from services.journey.metrics import RESOLUTIONS
from shared.errors import Conflict, NotFound
from shared.events import Envelope, IdentifierType
from shared.events.activity import ACTIVITY_SCHEMA, CustomerActivity


class StaleChunk(Exception):
    """A customer this chunk touched was merged by a concurrent transaction: retry the chunk."""


@dataclass
class Incoming:
    env: Envelope
    raw: bytes
    received_ms: int | None = None
    claims: list[Claim] = field(default_factory=list)
    text: str = ""  # ``raw`` decoded once: the event row and the map queue send the same str

    def __post_init__(self) -> None:
        self.claims = [claim_of(i.type, i.value, i.verified_by) for i in self.env.identifiers]


@dataclass
class ChunkResult:
    activities: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    applied: list[Incoming] = field(default_factory=list)
    duplicates: int = 0
    notified: list[str] = field(default_factory=list)


# A customer's identifiers come back with each of its events, close together; ~240 bytes an
# entry (65,536 held 16 MB for good), so a few batches' worth.
@lru_cache(maxsize=4_096)
def lock_key(tenant: str, key: str) -> int:
    digest = hashlib.blake2b(f"{tenant}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class _Held:
    home_id: uuid.UUID
    link_strength: int
    last_seen_at: datetime


class ChunkApplier:
    def __init__(self, conn: asyncpg.Connection, settings: JourneySettings):
        self.conn = conn
        self.settings = settings
        self.result = ChunkResult()
        self._held: dict[tuple[str, str], dict[uuid.UUID, _Held]] = {}
        self._customers: dict[tuple[str, uuid.UUID], list[Any]] = {}  # [strength, created_at]
        self._resolutions: Counter[tuple[str, str]] = Counter()  # (outcome, rule) → events
        self._reset_pending()

    def _reset_pending(self) -> None:
        self._new_customers: dict[tuple[str, uuid.UUID], datetime] = {}
        self._raised: dict[tuple[str, uuid.UUID], int] = {}
        self._links: dict[tuple[str, str, str, uuid.UUID], list[Any]] = {}
        self._events: list[repo.EventRow] = []
        self._provisional: list[tuple[str, uuid.UUID, uuid.UUID, str, int, str]] = []
        self._also_notify: set[tuple[str, uuid.UUID]] = set()
        self._touched: dict[tuple[str, uuid.UUID], list[Incoming]] = defaultdict(list)
        self._identities: dict[tuple[str, uuid.UUID], dict[str, dict[str, Any]]] = defaultdict(dict)

    async def run(self, items: list[Incoming]) -> ChunkResult:
        unique: dict[tuple[str, str], Incoming] = {}
        for item in items:
            unique.setdefault((item.env.tenant, item.env.id), item)
        seen = await repo.existing_events(self.conn, list(unique))
        todo = [item for k, item in unique.items() if k not in seen]
        self.result.duplicates = len(items) - len(todo)
        if not todo:
            return self.result
        await repo.lock_identifiers(
            self.conn, [lock_key(i.env.tenant, c.key) for i in todo for c in i.claims]
        )
        await self._load(todo)
        locked_all = False
        for index, item in enumerate(todo):
            resolution = self._resolve(item)
            if resolution.merges:
                if not locked_all:
                    await self._lock_every_context()
                    locked_all = True
                await self._flush()
                await self._merge(item, resolution)
                self._apply(item, resolution)
                await self._flush()
                await self._load(todo[index + 1 :])
            else:
                self._apply(item, resolution)
        await self._flush()
        for (outcome, rule), count in self._resolutions.items():  # one metric call per label
            RESOLUTIONS.labels(outcome, rule).inc(count)
        return self.result

    async def _lock_every_context(self) -> None:
        """Before a chunk's first merge, lock every context it may write (the customers holding
        its identifiers, and those it touched) in one statement, in key order. Without it the
        chunk would lock them in several statements (the flush before the merge, the merge's
        pair, the flushes after), taking a lower key while holding a higher one: a deadlock
        with anyone locking in key order, like the engagement consumer. Later locks in this
        transaction are then on rows it holds already (customers it creates are new rows)."""
        await context_repo.lock_contexts(self.conn, [*self._customers, *self._touched])

    async def _load(self, items: list[Incoming]) -> None:
        self._held.clear()
        self._customers.clear()
        keys = {(i.env.tenant, c.type_value, c.value) for i in items for c in i.claims}
        if not keys:
            return
        for row in await repo.holders(self.conn, keys):
            held = self._held.setdefault((row.tenant_id, row.key), {})
            current = held.get(row.customer_id)
            if current is None or row.link_strength > current.link_strength:
                held[row.customer_id] = _Held(row.home_id, row.link_strength, row.last_seen_at)
            self._customers[(row.tenant_id, row.customer_id)] = [
                row.customer_strength,
                row.created_at,
            ]

    def _resolve(self, item: Incoming) -> Resolution:
        tenant = item.env.tenant
        customers = self._customers
        holders: dict[str, list[Holder]] = {}
        for claim in item.claims:
            found = self._held.get((tenant, claim.key))
            listed: list[Holder] = []
            if found:
                for cid, h in found.items():
                    strength, created_at = customers[(tenant, cid)]
                    listed.append(
                        Holder(cid, h.link_strength, strength, created_at, h.last_seen_at)
                    )
            holders[claim.key] = listed
        return resolve(item.claims, holders, share_limit=self.settings.share_limit)

    async def _merge(self, item: Incoming, resolution: Resolution) -> None:
        assert resolution.customer_id is not None
        env = item.env
        for step in resolution.merges:
            try:
                await self._merge_one(env, resolution.customer_id, step)
            except (Conflict, NotFound) as exc:  # a concurrent transaction merged one of them
                raise StaleChunk(str(exc)) from exc
        # The merged customers' identifiers now resolve to the survivor.
        await self._load([item])

    async def _merge_one(self, env: Envelope, survivor: uuid.UUID, step: MergeStep) -> None:
        await merges.merge(
            self.conn,
            tenant=env.tenant,
            survivor_id=survivor,
            merged_id=step.merged_id,
            rule=step.rule.value,
            via=step.via,
            event_id=env.id,
            actor="journey-worker",
            channel=self.settings.notify_channel,
        )
        activity = CustomerActivity(
            kind="merged",
            tenant=env.tenant,
            customer_id=str(survivor),
            occurred_at=env.time,
            merged_ids=[str(step.merged_id)],
        )
        self.result.activities.append((activity.kafka_key(), activity.to_json()))

    def _apply(self, item: Incoming, resolution: Resolution) -> None:
        env = item.env
        tenant = env.tenant
        outcome, rule = resolution.outcome.value, resolution.rule.value  # enum .value is slow
        self._resolutions[(outcome, rule)] += 1
        keys = [c.key for c in item.claims]
        item.text = item.raw.decode()  # once: the event row and the map queue send this str
        if resolution.outcome is Outcome.blocked:
            self._events.append(
                (tenant, env.id, None, str(env.type), env.time, keys, "blocked", rule, item.text)
            )
            return
        cid = resolution.customer_id or new_customer_id(tenant, env.id)
        if resolution.customer_id is None:
            self._new_customers[(tenant, cid)] = env.time
            self._customers[(tenant, cid)] = [0, env.time]
        info = self._customers[(tenant, cid)]
        at = ctx.iso(env.time) if resolution.link else None
        identities = self._identities[(tenant, cid)] if resolution.link else None
        for claim in resolution.link:
            held = self._held.setdefault((tenant, claim.key), {})
            h = held.get(cid)
            home = h.home_id if h else cid
            strength = claim.strength
            verified = claim.verified_value
            link_key = (tenant, claim.type_value, claim.value, home)
            link = self._links.get(link_key)
            if link is None:
                self._links[link_key] = [strength, verified, env.id, env.time, env.time]
            else:
                if strength > link[0]:
                    link[0], link[1] = strength, verified
                link[3], link[4] = min(link[3], env.time), max(link[4], env.time)
            ctx.merge_identity(
                {"identities": identities},
                claim.key,
                {
                    "type": claim.type_value,
                    "value": claim.value,
                    "strength": strength,
                    "verified_by": verified,
                    "source_event_id": env.id,
                    "first_seen_at": at,
                    "last_seen_at": at,
                },
            )
            if h is None:
                # Another customer held this identifier: a look-up by it may now answer
                # differently, so announce a change for that customer too (API caches).
                self._also_notify.update((tenant, other) for other in held)
                held[cid] = _Held(home, strength, env.time)
            else:
                h.link_strength = max(h.link_strength, strength)
                h.last_seen_at = max(h.last_seen_at, env.time)
            if strength > info[0]:
                info[0] = strength
                self._raised[(tenant, cid)] = strength
        for p in resolution.provisional:
            self._provisional.append((tenant, cid, p.other_id, p.via, p.strength, env.id))
        self._events.append(
            (tenant, env.id, cid, str(env.type), env.time, keys, outcome, rule, item.text)
        )
        self._touched[(tenant, cid)].append(item)

    async def _flush(self) -> None:
        conn = self.conn
        await repo.insert_customers(
            conn,
            [
                (t, cid, self._customers[(t, cid)][0], at)
                for (t, cid), at in self._new_customers.items()
            ],
        )
        await repo.raise_strengths(
            conn,
            [
                (t, cid, s)
                for (t, cid), s in self._raised.items()
                if (t, cid) not in self._new_customers
            ],
        )
        await repo.upsert_links(
            conn,
            [(t, ty, v, home, *rest) for (t, ty, v, home), rest in self._links.items()],
        )
        await repo.insert_events(conn, self._events)
        await repo.insert_provisional(conn, self._provisional)
        touched = list(self._touched)
        if touched:
            locked = await context_repo.lock_contexts(conn, touched)
            if await repo.merged_among(conn, touched):
                raise StaleChunk("a customer of this chunk was merged concurrently")
            saves = []
            for key in touched:
                doc, version = locked.get(key, (None, 0))
                doc = doc or ctx.empty()
                items = sorted(self._touched[key], key=lambda i: (i.env.time, i.env.id))
                ctx.apply_events(doc, [item.env for item in items])
                for ikey, link in self._identities.get(key, {}).items():
                    ctx.merge_identity(doc, ikey, link)
                saves.append((key[0], key[1], orjson.dumps(doc), version + 1))
                # once per customer, not per event: its key, its traits' JSON
                customer = str(key[1])
                kafka_key = f"{key[0]}|{customer}".encode()
                traits = orjson.Fragment(orjson.dumps(ctx.trait_snapshot(doc), option=_UTC_Z))
                for item in items:
                    self.result.activities.append(_activity(item, customer, traits, kafka_key))
                self.result.applied += items
                self.result.notified.append(f"{key[0]}|{key[1]}|{version + 1}")
            await context_repo.save_contexts(conn, saves)
            if self.settings.map_maintenance:  # folded into the journey map by its compactor
                await maps_repo.enqueue_events(
                    conn, [(*key, i.env, i.text) for key in touched for i in self._touched[key]]
                )
            notices = self.result.notified[-len(saves) :]
            notices += [f"{t}|{c}|0" for t, c in self._also_notify - set(touched)]
            await context_repo.notify(conn, self.settings.notify_channel, notices)
        self._reset_pending()


_UTC_Z = orjson.OPT_UTC_Z


def _activity(
    item: Incoming,
    customer_id: uuid.UUID | str,
    traits: dict[str, Any] | orjson.Fragment,
    kafka_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """``CustomerActivity(kind="event", …)`` as ``to_json()`` renders it, without building the
    model (the hot path; ``tests/journey/context/test_rules.py`` checks both render the same).
    ``traits`` may be their JSON already (a ``Fragment``, rendered with ``OPT_UTC_Z``) and
    ``kafka_key`` the customer's key: the worker renders both once per customer."""
    env = item.env
    customer_id = str(customer_id)
    account = next((i.value for i in env.identifiers if i.type is IdentifierType.account_id), None)
    body: dict[str, Any] = {
        "schema": ACTIVITY_SCHEMA,
        "kind": "event",
        "tenant": env.tenant,
        "customer_id": customer_id,
    }
    if account is not None:
        body["account_id"] = account
    body["occurred_at"] = env.time
    body["event"] = orjson.Fragment(item.raw)  # the event's JSON as received: not re-encoded
    body["traits"] = traits
    body["merged_ids"] = []
    body["split_ids"] = []
    if kafka_key is None:
        kafka_key = f"{env.tenant}|{customer_id}".encode()
    return kafka_key, orjson.dumps(body, option=_UTC_Z)
