"""The agent's context: one indexed query per screen pop, views computed in Python; and the
facts an agent records.

Queries run on an asyncpg pool (prepared statements, no ORM on the hot path). Every query
filters on the caller's tenant; a customer id of another tenant is simply not found.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.config import JourneySettings
from services.journey.context import repository as repo
from services.journey.context import rules as ctx
from services.journey.context import views
from services.journey.context.batch import Batcher
from services.journey.context.cache import ContextCache, Entry
from services.journey.context.rules import Doc, empty, identity_list, timeline_item
from services.journey.identity import repository as identity_repo
from services.journey.identity.rules import Rule
from services.journey.metrics import LOOKUP_BATCH, LOOKUP_LATENCY, LOOKUPS
from services.journey.outbox import enqueue_activity
from shared.auth.service import Principal
from shared.cursors import cursor_key, cursor_time, invalid_cursor
from shared.db import raw_connection
from shared.errors import BadRequest, Conflict, NotFound, Unprocessable
from shared.events import (
    EventRejected,
    IdentifierType,
    InvalidIdentifier,
    normalize_identifier,
    parse_normalized,
    validate_event,
)
from shared.events.activity import CustomerActivity
from shared.privacy.crypto import Keyring
from shared.privacy.masking import Opener, masked
from shared.privacy.sealing import seal_raw

# Identifier look-ups (tenant, id_type, normalized value) batched into one statement
# (``repository.by_identifiers``); the app keeps one per process (``app.state.lookups``).
Lookups = Batcher[tuple[str, str, str], list[asyncpg.Record]]


def identifier_lookups(pool: asyncpg.Pool, max_size: int) -> Lookups:
    """Concurrent look-ups on ``pool``, up to ``max_size`` per statement."""
    return Batcher(
        lambda keys: repo.by_identifiers(pool, keys),
        max_size=max_size,
        per_key=(asyncpg.DataError,),  # class 22: one key's value (e.g. a NUL character)
        observe=LOOKUP_BATCH.observe,
    )


KINDS = ("context", "route_hint", "customer", "timeline", "identities", "stream")
# Children bound once: ``labels()`` takes a lock and a dict look-up on every call.
_LATENCY = {k: LOOKUP_LATENCY.labels(k) for k in KINDS}
_RESULT = {(k, r): LOOKUPS.labels(k, r) for k in KINDS for r in ("hit", "miss")}


@dataclass
class Found:
    customer_id: uuid.UUID
    doc: Doc
    version: int
    holders: int
    identities: list[dict[str, Any]]
    requested_id: uuid.UUID | None = None
    cached: Entry | None = None  # the context cache's entry it was read from (a hit)


def normalized_lookup(identifier_type: str, value: str, *, phone_region: str) -> tuple[str, str]:
    """Normalize a look-up exactly as ingest normalizes events (E.164, lower-case e-mail).

    ``phone_region`` must be the one ingest used for this tenant (its own, else the shared
    ``WAYPOINT_PHONE_REGION``), or a national number finds no one, or someone else.
    """
    try:
        id_type = IdentifierType(identifier_type)
    except ValueError:
        known = ", ".join(t.value for t in IdentifierType)
        raise BadRequest(f"unknown identifier_type {identifier_type!r}; known: {known}") from None
    if "\x00" in value:  # no stored identifier holds one (ingest refuses it): a clear refusal
        raise BadRequest(f"{id_type.value} contains a NUL character (\\u0000)")
    try:
        return id_type.value, normalize_identifier(id_type, value, default_region=phone_region)
    except InvalidIdentifier as exc:
        raise BadRequest(str(exc)) from None


def _found(row: asyncpg.Record, requested: uuid.UUID | None = None, holders: int = 1) -> Found:
    doc = orjson.loads(row[1]) if row[1] else empty()
    return Found(
        customer_id=row[0],
        doc=doc,
        version=row[2],
        holders=holders,
        identities=identity_list(doc),
        requested_id=requested,
    )


async def find_by_identifier(
    pool: asyncpg.Pool,
    tenant: str,
    identifier_type: str,
    value: str,
    *,
    phone_region: str,
    kind: str,
    cache: ContextCache | None = None,
    lookups: Lookups | None = None,
) -> Found:
    id_type, normalized = normalized_lookup(identifier_type, value, phone_region=phone_region)
    return await _find_normalized(
        pool, tenant, id_type, normalized, kind=kind, cache=cache, lookups=lookups
    )


async def _find_normalized(
    pool: asyncpg.Pool,
    tenant: str,
    id_type: str,
    normalized: str,
    *,
    kind: str,
    cache: ContextCache | None,
    lookups: Lookups | None = None,
) -> Found:
    started = time.perf_counter()
    if cache is not None:
        cid = cache.customer(tenant, id_type, normalized)
        hit = cache.document((tenant, cid)) if cid is not None else None
        if cid is not None and hit is not None:
            _LATENCY[kind].observe(time.perf_counter() - started)
            _RESULT[kind, "hit"].inc()
            return _from_text(cid, hit[1], hit[0], cached=hit)
        token = cache.token()
    # With ``lookups``, batched with the look-ups of other requests in flight (one statement);
    # the rows are exactly this key's ``by_identifier`` rows either way.
    if lookups is not None:
        rows = await lookups.load((tenant, id_type, normalized))
    else:
        rows = await repo.by_identifier(pool, tenant, id_type, normalized)
    _LATENCY[kind].observe(time.perf_counter() - started)
    _RESULT[kind, "hit" if rows else "miss"].inc()
    if not rows:
        raise NotFound(f"no customer with {id_type} {normalized}")
    holders = len({r[0] for r in rows})
    if cache is not None and holders == 1 and rows[0][1] is not None:
        cache.put(
            (tenant, rows[0][0]), rows[0][2], rows[0][1], token, (tenant, id_type, normalized)
        )
    # ``cached`` stays None: a card is kept from a customer's second pop on (a document hit),
    # so a customer popped once per contact costs no card bytes.
    return _found(rows[0], holders=holders)


async def screen_pop_card(
    pool: asyncpg.Pool,
    tenant: str,
    identifier_type: str,
    value: str,
    *,
    phone_region: str,
    cache: ContextCache | None = None,
    lookups: Lookups | None = None,
) -> bytes:
    """The screen pop's masked card as its JSON body: from the context cache's rendered cards
    when one is kept and still valid, else rendered (and kept beside its document when that
    came from the cache: from the customer's second pop on)."""
    id_type, normalized = normalized_lookup(identifier_type, value, phone_region=phone_region)
    if cache is not None:
        started = time.perf_counter()
        body = cache.card(tenant, id_type, normalized, time.time())
        if body is not None:
            _LATENCY["context"].observe(time.perf_counter() - started)
            _RESULT["context", "hit"].inc()
            return body
    found = await _find_normalized(
        pool, tenant, id_type, normalized, kind="context", cache=cache, lookups=lookups
    )
    body, until = masked_card(found, now=datetime.now(UTC))
    if cache is not None and found.cached is not None:
        cache.put_card((tenant, found.customer_id), found.cached, until, body)
    return body


def masked_card(found: Found, *, now: datetime) -> tuple[bytes, float]:
    """The agent's card, masked, as JSON, and until when (epoch seconds; ``math.inf``: for
    ever) the clock alone leaves it unchanged."""
    with views.horizon() as horizon:
        body = orjson.dumps(context_view(found, now=now, reveal=False))
    return body, horizon.until.timestamp() if horizon.until is not None else math.inf


async def find_by_id(
    pool: asyncpg.Pool,
    tenant: str,
    customer_id: uuid.UUID,
    *,
    kind: str,
    cache: ContextCache | None = None,
) -> Found:
    started = time.perf_counter()
    if cache is not None:
        hit = cache.document((tenant, customer_id))
        if hit is not None:
            _LATENCY[kind].observe(time.perf_counter() - started)
            _RESULT[kind, "hit"].inc()
            return _from_text(customer_id, hit[1], hit[0], requested=customer_id, cached=hit)
        token = cache.token()
    row = await repo.by_id(pool, tenant, customer_id)
    _LATENCY[kind].observe(time.perf_counter() - started)
    _RESULT[kind, "hit" if row else "miss"].inc()
    if row is None:
        raise NotFound(f"customer {customer_id} not found")
    if cache is not None and row[0] == customer_id and row[1] is not None:
        cache.put((tenant, customer_id), row[2], row[1], token)
    return _found(row, customer_id)


def _from_text(
    customer_id: uuid.UUID,
    text: str,
    version: int,
    *,
    requested: uuid.UUID | None = None,
    cached: Entry | None = None,
) -> Found:
    doc = orjson.loads(text)
    return Found(customer_id, doc, version, 1, identity_list(doc), requested, cached)


def opened(found: Found, opener: Opener) -> Found:
    """``found`` with the sealed values of its facts and recent items opened (for a reveal)."""
    doc = {
        **found.doc,
        "facts": views.opened(found.doc["facts"], opener),
        "recent": views.opened(found.doc["recent"], opener),
    }
    return dataclasses.replace(found, doc=doc, cached=None)


def context_view(found: Found, *, now: datetime, reveal: bool) -> dict[str, Any]:
    """The agent's card: everything in one response."""
    doc = found.doc
    last_interaction = doc["last_interaction"] or {}
    derived = views.Derived.of(doc)  # computed once for the card and its summary
    view = {
        "customer_id": str(found.customer_id),
        "version": found.version,
        "identities": found.identities,
        "traits": doc["traits"],
        "facts": views.facts_ledger(doc, now=now, reveal=reveal),
        "open_cases": derived.cases,
        "cases": list(doc["cases"].values()),
        "last_agent": doc["last_agent"],
        "last_interaction": doc["last_interaction"],
        "last_channel": last_interaction.get("channel"),
        "last_contact_reason": doc["last_contact_reason"],
        "pending_callbacks": derived.callbacks,
        "surveys": doc["surveys"],
        "sentiment": derived.trend,
        "channels": doc["channels"],
        "recent": views.timeline_items(doc["recent"], reveal=reveal),
        "purchases": views.purchases(doc),
        "engagement": derived.risk,
        "event_count": doc["event_count"],
        "first_seen_at": doc["first_seen_at"],
        "last_seen_at": doc["last_seen_at"],
        "summary": views.handoff_summary(
            doc, identities=found.identities, now=now, derived=derived
        ),
    }
    if found.requested_id is not None and found.requested_id != found.customer_id:
        view["merged_from"] = str(found.requested_id)
    if found.holders > 1:
        view["ambiguous"] = {
            "holders": found.holders,
            "note": "this identifier is held by several customers; the strongest link is shown",
        }
    return view


def encode_cursor(time_iso: str, event_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([time_iso, event_id])).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The cursor ``encode_cursor`` made, or a 422 naming the ``cursor`` parameter."""
    try:
        at, event_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise invalid_cursor() from exc
    return cursor_time(at), cursor_key(event_id)


async def timeline(
    pool: asyncpg.Pool,
    tenant: str,
    customer_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    reveal: bool = False,
    opener: Opener | None = None,
) -> dict[str, Any]:
    """Cross-channel timeline, newest first, keyset-paged on (time, event id); sensitive fact
    values and message excerpts masked unless ``reveal`` (opened with ``opener``)."""
    before = decode_cursor(cursor) if cursor else None  # a bad request is a 422 before a 404
    found = await find_by_id(pool, tenant, customer_id, kind="timeline")
    rows = await repo.timeline_rows(pool, tenant, found.customer_id, before=before, limit=limit + 1)
    items = [timeline_item(parse_normalized(r[0].encode())) for r in rows[:limit]]
    if reveal and opener is not None:
        items = views.opened(items, opener)
    items = views.timeline_items(items, reveal=reveal)
    next_cursor = None
    if len(rows) > limit:
        last = parse_normalized(rows[limit - 1][0].encode())
        next_cursor = encode_cursor(last.time.isoformat(), last.id)
    return {"customer_id": str(found.customer_id), "items": items, "next_cursor": next_cursor}


async def record_fact(
    session: AsyncSession,
    *,
    settings: JourneySettings,
    principal: Principal,
    customer_id: uuid.UUID,
    fact: dict[str, Any],
    keyring: Keyring,
) -> dict[str, Any]:
    """An agent records a fact: stored as a ``fact.collected`` event of that customer, with the
    customer's activity in the outbox, in the caller's transaction. A sensitive value is stored
    sealed and answered masked."""
    tenant = principal.tenant_id
    now = datetime.now(UTC)
    conn = await raw_connection(session)
    cid = await identity_repo.active_id(conn, tenant, customer_id)
    if cid is None:
        raise NotFound(f"customer {customer_id} not found")
    ident = await identity_repo.strongest_identifier(conn, tenant, cid)
    if ident is None:
        raise Conflict(f"customer {cid} has no identifier to attach a fact to")
    data = {"identifiers": [{"type": ident[0], "value": ident[1]}], **fact}
    if fact.get("sensitive"):
        await keyring.ensure(conn, {tenant})
    seal_raw(tenant, "fact.collected", data, keyring)
    raw = {
        "specversion": "1.0",
        "id": f"agent-fact-{uuid.uuid4().hex}",
        "source": f"waypoint-journey/agent/{principal.key_id}",
        "type": "fact.collected",
        "time": now.isoformat(),
        "tenant": tenant,
        "data": data,
    }
    try:
        env = validate_event(raw, now=now)
    except EventRejected as exc:
        raise Unprocessable(exc.message) from None
    body = env.to_json()
    await identity_repo.insert_events(
        conn,
        [
            (tenant, env.id, cid, str(env.type), env.time, [f"{ident[0]}:{ident[1]}"],
             "matched", Rule.manual.value, body.decode())
        ],
    )  # fmt: skip
    locked = await repo.lock_contexts(conn, [(tenant, cid)])
    doc, version = locked.get((tenant, cid), (ctx.empty(), 0))
    ctx.apply_event(doc, env)
    await repo.save_contexts(conn, [(tenant, cid, orjson.dumps(doc), version + 1)])
    await repo.notify(conn, settings.notify_channel, [f"{tenant}|{cid}|{version + 1}"])
    await enqueue_activity(
        conn,
        settings,
        CustomerActivity(
            tenant=tenant,
            customer_id=str(cid),
            occurred_at=env.time,
            event=orjson.loads(body),
            traits=ctx.trait_snapshot(doc),
        ),
    )
    return {
        "customer_id": str(cid),
        "event_id": env.id,
        "version": version + 1,
        "fact": masked(next(f for f in doc["facts"] if f["event_id"] == env.id), reveal=False),
    }
