"""Write side of the agent API: manual merge, split, agent-recorded facts.

Each command is one unit of work, audited in the same transaction. The resulting customer
activity is published, and the broker's acknowledgement awaited, inside that transaction
before it commits: when the broker does not take it, nothing is stored and the client gets a
503. (The remaining gap, a COMMIT that fails after the broker took the activity, publishes a
change that was not saved; an outbox closes it.)
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.journey.config import JourneySettings
from services.journey.context import repository as context_repo
from services.journey.context import rules as ctx
from services.journey.identity import merges
from services.journey.identity import repository as repo
from services.journey.identity.rules import Rule
from shared.auth.service import Principal, audit
from shared.db import Database, raw_connection
from shared.deps import unit_of_work
from shared.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from shared.events import EventRejected, validate_event
from shared.events.activity import CustomerActivity


async def _active(conn: Any, tenant: str, customer_id: uuid.UUID) -> uuid.UUID:
    row = await repo.customer_row(conn, tenant, customer_id)
    if row is None:
        raise NotFound(f"customer {customer_id} not found")
    return row["merged_into"] or row["id"]  # type: ignore[no-any-return]


async def _deliver(
    producer: AIOKafkaProducer | None, topic: str, activity: CustomerActivity
) -> None:
    """Publish and await the broker's acknowledgement (called inside the command's transaction,
    so a refusal rolls the change back)."""
    if producer is None:
        return
    try:
        await producer.send_and_wait(topic, activity.to_json(), key=activity.kafka_key())
    except KafkaError as exc:
        raise ServiceUnavailable(
            f"the event broker did not acknowledge the change ({type(exc).__name__}); "
            "nothing was saved, retry"
        ) from exc


async def manual_merge(
    *,
    db: Database,
    producer: AIOKafkaProducer | None,
    settings: JourneySettings,
    principal: Principal,
    survivor_id: uuid.UUID,
    merged_id: uuid.UUID,
    reason: str | None,
) -> merges.MergeResult:
    tenant = principal.tenant_id
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        survivor = await _active(conn, tenant, survivor_id)
        merged = await _active(conn, tenant, merged_id)
        if survivor == merged:
            raise Conflict(f"customers {survivor_id} and {merged_id} are already one customer")
        result = await merges.merge(
            conn,
            tenant=tenant,
            survivor_id=survivor,
            merged_id=merged,
            rule=Rule.manual.value,
            actor=f"key:{principal.key_id}",
            reason=reason,
            channel=settings.notify_channel,
        )
        await audit(
            session,
            tenant_id=tenant,
            actor=f"key:{principal.key_id}",
            action="customer.merged",
            target=str(survivor),
            detail={"merged_id": str(merged), "merge_id": result.merge_id, "reason": reason},
        )
        await _deliver(
            producer,
            settings.topic_activity,
            CustomerActivity(
                kind="merged",
                tenant=tenant,
                customer_id=str(survivor),
                occurred_at=datetime.now(UTC),
                traits=ctx.trait_snapshot(result.doc),
                merged_ids=[str(merged)],
            ),
        )
    return result


async def split_customer(
    *,
    db: Database,
    producer: AIOKafkaProducer | None,
    settings: JourneySettings,
    principal: Principal,
    customer_id: uuid.UUID,
    merge_id: int | None,
    reason: str | None,
) -> merges.SplitResult:
    tenant = principal.tenant_id
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        row = await repo.customer_row(conn, tenant, customer_id)
        if row is None:
            raise NotFound(f"customer {customer_id} not found")
        if row["status"] != "active":
            raise Conflict(
                f"customer {customer_id} is merged into {row['merged_into']}; split that customer"
            )
        result = await merges.split(
            conn,
            tenant=tenant,
            customer_id=customer_id,
            actor=f"key:{principal.key_id}",
            merge_id=merge_id,
            reason=reason,
            channel=settings.notify_channel,
        )
        await audit(
            session,
            tenant_id=tenant,
            actor=f"key:{principal.key_id}",
            action="customer.split",
            target=str(customer_id),
            detail={
                "merge_id": result.merge_id,
                "restored_id": str(result.restored_id),
                "moved_events": len(result.moved_events),
                "reason": reason,
            },
        )
        await _deliver(
            producer,
            settings.topic_activity,
            CustomerActivity(
                kind="split",
                tenant=tenant,
                customer_id=str(customer_id),
                occurred_at=datetime.now(UTC),
                traits=ctx.trait_snapshot(result.docs[customer_id][0]),
                split_ids=[str(customer_id), str(result.restored_id)],
            ),
        )
    return result


async def record_fact(
    *,
    db: Database,
    producer: AIOKafkaProducer | None,
    settings: JourneySettings,
    principal: Principal,
    customer_id: uuid.UUID,
    fact: dict[str, Any],
) -> dict[str, Any]:
    """An agent records a fact: stored as a ``fact.collected`` event of that customer, and
    published as the customer's activity, or neither."""
    tenant = principal.tenant_id
    now = datetime.now(UTC)
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        cid = await _active(conn, tenant, customer_id)
        ident = await conn.fetchrow(
            """SELECT i.id_type, i.value FROM journey.identifier i
               JOIN journey.customer m ON m.tenant_id = i.tenant_id AND m.id = i.customer_id
               WHERE i.tenant_id = $1 AND (m.id = $2 OR m.merged_into = $2)
               ORDER BY i.strength DESC, i.last_seen_at DESC LIMIT 1""",
            tenant,
            cid,
        )
        if ident is None:
            raise Conflict(f"customer {cid} has no identifier to attach a fact to")
        raw = {
            "specversion": "1.0",
            "id": f"agent-fact-{uuid.uuid4().hex}",
            "source": f"waypoint-journey/agent/{principal.key_id}",
            "type": "fact.collected",
            "time": now.isoformat(),
            "tenant": tenant,
            "data": {"identifiers": [{"type": ident[0], "value": ident[1]}], **fact},
        }
        try:
            env = validate_event(raw, now=now)
        except EventRejected as exc:
            raise Unprocessable(exc.message) from None
        body = env.to_json()
        await repo.insert_events(
            conn,
            [
                (tenant, env.id, cid, str(env.type), env.time, [f"{ident[0]}:{ident[1]}"],
                 "matched", Rule.manual.value, body.decode())
            ],
        )  # fmt: skip
        locked = await context_repo.lock_contexts(conn, [(tenant, cid)])
        doc, version = locked.get((tenant, cid), (ctx.empty(), 0))
        ctx.apply_event(doc, env)
        await context_repo.save_contexts(conn, [(tenant, cid, orjson.dumps(doc), version + 1)])
        await context_repo.notify(conn, settings.notify_channel, [f"{tenant}|{cid}|{version + 1}"])
        await _deliver(
            producer,
            settings.topic_activity,
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
        "fact": next(f for f in doc["facts"] if f["event_id"] == env.id),
    }
