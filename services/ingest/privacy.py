"""Ingest's part of an erasure: tombstone the identifiers, delete the stored events and the dead
letters that carry them. Run as the ingest ``privacy`` process (shared/privacy/erasure.py)."""

from __future__ import annotations

import asyncio

import asyncpg

from services.ingest.config import IngestSettings
from shared.events.erasure import CustomerErasureRequested
from shared.logging import configure_logging
from shared.privacy import tombstones
from shared.privacy.crypto import Keyring
from shared.privacy.erasure import run_consumer, sealed_keys


class IngestErasure:
    def __init__(self, keyring: Keyring):
        self.keyring = keyring

    async def __call__(
        self, conn: asyncpg.Connection, command: CustomerErasureRequested
    ) -> dict[str, int]:
        tenant = command.tenant
        await tombstones.bury(conn, "ingest", tenant, command.erasure_id, command.identifier_hashes)
        keys: list[str] = []
        if command.identifiers_sealed:
            await self.keyring.ensure(conn, {tenant})
            keys = sealed_keys(self.keyring.unseal(tenant, command.identifiers_sealed))
        deleted = await conn.fetch(
            "DELETE FROM ingest.event WHERE tenant_id = $1 AND identifiers && $2::text[] "
            "RETURNING event_id",
            tenant,
            keys,
        )
        event_ids = [r["event_id"] for r in deleted]
        # A refused record is matched by its event id, or by an identifier's value written as
        # normalized (one written otherwise cannot be told apart from anyone else's text).
        values = [k.partition(":")[2] for k in keys if k.partition(":")[2]]
        letters = await conn.execute(
            "DELETE FROM ingest.dead_letter WHERE tenant_id = $1 AND (event_id = ANY($2::text[]) "
            "OR EXISTS (SELECT 1 FROM unnest($3::text[]) AS v WHERE strpos(payload, v) > 0))",
            tenant,
            event_ids,
            values,
        )
        return {
            "events": len(event_ids),
            "dead_letters": int(letters.split()[-1]),
            "tombstones": len(command.identifier_hashes),
        }


async def run(settings: IngestSettings, *, stop: asyncio.Event | None = None) -> None:
    """Apply erasure commands until stopped."""
    if stop is None:
        configure_logging("ingest-privacy", level=settings.log_level, json=settings.log_json)
    await run_consumer(
        settings,
        service="ingest",
        group_id=f"{settings.consumer_group}-privacy",
        apply=IngestErasure(Keyring.from_setting(settings.sealing_keys)),
        stop=stop,
    )
