"""Erasing a customer: the request (receipt, audit, command on the privacy topic) and journey's
own part (events, identities, context, merges, map contributions, tombstones)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.journey import outbox as journey_outbox
from services.journey.config import JourneySettings
from services.journey.context import repository as context_repo
from services.journey.experience import counts as survey_counts
from services.journey.identity import repository as identity_repo
from services.journey.maps import repository as maps_repo
from shared import outbox
from shared.auth.service import Principal, audit
from shared.db import Database, raw_connection
from shared.errors import NotFound
from shared.events.erasure import ERASING_SERVICES, CustomerErasureRequested
from shared.privacy import tombstones
from shared.privacy.crypto import Keyring
from shared.privacy.erasure import sealed_keys
from shared.unit_of_work import unit_of_work


async def members(conn: asyncpg.Connection, tenant: str, root: uuid.UUID) -> list[uuid.UUID]:
    """The customer and every customer merged into it (merges point at the survivor)."""
    rows = await conn.fetch(
        "SELECT id FROM journey.customer WHERE tenant_id = $1 AND (id = $2 OR merged_into = $2)",
        tenant,
        root,
    )
    return [r["id"] for r in rows] or [root]


async def own_identifiers(
    conn: asyncpg.Connection, tenant: str, customers: list[uuid.UUID]
) -> list[str]:
    """``"type:value"`` of the identifiers these customers hold and nobody else does (a number
    shared with another customer stays: tombstoning it would drop that customer's events)."""
    rows = await conn.fetch(
        """SELECT DISTINCT i.id_type || ':' || i.value AS key FROM journey.identifier i
           WHERE i.tenant_id = $1 AND i.customer_id = ANY($2::uuid[])
             AND NOT EXISTS (
                 SELECT 1 FROM journey.identifier o
                 WHERE o.tenant_id = i.tenant_id AND o.id_type = i.id_type
                   AND o.value = i.value AND o.customer_id <> ALL($2::uuid[]))
           ORDER BY 1""",
        tenant,
        customers,
    )
    return [r["key"] for r in rows]


async def request_erasure(
    *,
    db: Database,
    settings: JourneySettings,
    keyring: Keyring,
    principal: Principal,
    customer_id: uuid.UUID,
    reference: str | None = None,
) -> dict[str, Any]:
    """Store the receipt, the audit row and the command every service applies (in journey's
    outbox) in one transaction: once this returns, the command will be published (by the
    journey worker's relay), even if the broker is down right now."""
    tenant = principal.tenant_id
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        root = await identity_repo.active_id(conn, tenant, customer_id)
        if root is None:
            raise NotFound(f"customer {customer_id} not found")
        ids = await members(conn, tenant, root)
        keys = await own_identifiers(conn, tenant, ids)
        await keyring.ensure(conn, {tenant})
        erasure_id = uuid.uuid4()
        command = CustomerErasureRequested(
            erasure_id=str(erasure_id),
            tenant=tenant,
            customer_id=str(root),
            customer_ids=[str(i) for i in ids],
            identifier_hashes=[keyring.identifier_hash(tenant, k) for k in keys],
            identifiers_sealed=keyring.seal(tenant, keys),
            requested_at=datetime.now(UTC),
        )
        actor = f"key:{principal.key_id}"
        await conn.execute(
            "INSERT INTO auth.erasure (id, tenant_id, customer_id, requested_by, services) "
            "VALUES ($1, $2, $3, $4, $5)",
            erasure_id,
            tenant,
            root,
            actor,
            list(ERASING_SERVICES),
        )
        # Ids and counts only: the audit log must not keep what was erased.
        await audit(
            session,
            tenant_id=tenant,
            actor=actor,
            action="customer.erasure_requested",
            target=str(root),
            detail={
                "erasure_id": str(erasure_id),
                "customers": len(ids),
                "identifiers": len(keys),
                "reference": reference,
            },
        )
        message = outbox.Message(tenant, settings.topic_privacy, command.key(), command.to_json())
        await outbox.enqueue(conn, journey_outbox.SCHEMA, [message], lanes=settings.outbox_lanes)
        await outbox.notify(conn, settings.outbox_channel)
    return await receipt(db, tenant, erasure_id)


async def receipt(db: Database, tenant: str, erasure_id: uuid.UUID) -> dict[str, Any]:
    """The erasure and each service's completion (404 for another tenant's)."""
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        row = await conn.fetchrow(
            "SELECT id, customer_id, services, requested_at FROM auth.erasure "
            "WHERE id = $1 AND tenant_id = $2",
            erasure_id,
            tenant,
        )
        if row is None:
            raise NotFound(f"erasure {erasure_id} not found")
        steps = {
            r["service"]: r
            for r in await conn.fetch(
                "SELECT service, counts::text AS counts, completed_at FROM auth.erasure_step "
                "WHERE erasure_id = $1",
                erasure_id,
            )
        }
    services = [
        {
            "service": name,
            "status": "done" if name in steps else "pending",
            "completed_at": steps[name]["completed_at"] if name in steps else None,
            "counts": orjson.loads(steps[name]["counts"]) if name in steps else {},
        }
        for name in row["services"]
    ]
    return {
        "id": str(row["id"]),
        "customer_id": str(row["customer_id"]),
        "status": "done" if all(s["status"] == "done" for s in services) else "pending",
        "requested_at": row["requested_at"],
        "services": services,
    }


class JourneyErasure:
    """Journey's part, in the consumer's transaction; a replay finds nothing left."""

    def __init__(self, keyring: Keyring, settings: JourneySettings):
        self.keyring = keyring
        self.settings = settings

    async def __call__(
        self, conn: asyncpg.Connection, command: CustomerErasureRequested
    ) -> dict[str, int]:
        tenant = command.tenant
        given = [uuid.UUID(c) for c in command.customer_ids]
        # Customers merged into it since the request go too.
        rows = await conn.fetch(
            "SELECT id FROM journey.customer WHERE tenant_id = $1 "
            "AND (id = ANY($2::uuid[]) OR merged_into = ANY($2::uuid[]))",
            tenant,
            given,
        )
        ids = sorted({*given, *(r["id"] for r in rows)})
        await self.keyring.ensure(conn, {tenant})
        keys = set(await own_identifiers(conn, tenant, ids))
        if command.identifiers_sealed:
            keys |= set(sealed_keys(self.keyring.unseal(tenant, command.identifiers_sealed)))
        hashes = {*command.identifier_hashes}
        hashes |= {self.keyring.identifier_hash(tenant, k) for k in keys}
        await tombstones.bury(conn, "journey", tenant, command.erasure_id, sorted(hashes))
        # the health summary's survey day counts lose the erased responses
        await survey_counts.remove(
            conn, tenant, "customer_id = ANY($2::uuid[]) OR identifier_keys && $3::text[]",
            ids, sorted(keys),
        )  # fmt: skip
        events = await conn.execute(
            "DELETE FROM journey.event WHERE tenant_id = $1 "
            "AND (customer_id = ANY($2::uuid[]) OR identifier_keys && $3::text[])",
            tenant,
            ids,
            sorted(keys),
        )
        counts = {"events": _count(events), "tombstones": len(hashes)}
        # Map: drop its queued events, then re-derive the customers; once their rows are gone
        # the compactor subtracts their stored contribution (maps/maintain.py, mode "gone").
        await conn.execute(
            "DELETE FROM journey.map_pending "
            "WHERE tenant_id = $1 AND customer_id = ANY($2::uuid[])",
            tenant,
            ids,
        )
        for table, where in (
            ("context", "customer_id = ANY($2::uuid[])"),
            ("identifier", "customer_id = ANY($2::uuid[])"),
            ("provisional_link", "customer_id = ANY($2::uuid[]) OR other_id = ANY($2::uuid[])"),
            ("split", "customer_id = ANY($2::uuid[]) OR restored_id = ANY($2::uuid[])"),
            ("merge", "survivor_id = ANY($2::uuid[]) OR merged_id = ANY($2::uuid[])"),
            ("customer", "id = ANY($2::uuid[])"),
        ):
            status = await conn.execute(
                f"DELETE FROM journey.{table} WHERE tenant_id = $1 AND ({where})", tenant, ids
            )
            counts[table] = _count(status)
        await maps_repo.enqueue_customers(conn, tenant, ids)
        # Every API process drops the customer from its context cache at commit.
        await context_repo.notify(
            conn, self.settings.notify_channel, [f"{tenant}|{cid}|{2**31 - 1}" for cid in ids]
        )
        return counts


def _count(status: str) -> int:
    return int(status.split()[-1])
