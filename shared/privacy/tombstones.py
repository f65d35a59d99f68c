"""Tombstones of erased identifiers: a salted hash (HMAC under the tenant's data key) per
identifier, so a later, replayed or redriven event of an erased customer is dropped without
the store keeping the identifier itself. Each service keeps its own table (its schema).

Most tenants never erase anyone: ``Markers`` remembers, per process, the tenants that have no
tombstone, so a batch of theirs is neither hashed nor looked up. ``bury`` NOTIFYs the
service's channel with the tenant at the erasure's commit, which forgets it; a process that
loses its listening connection forgets every tenant (it may have missed a notification), and
what it learnt is looked up again after ``max_age_seconds`` anyway (a connection can die
without anyone noticing for a while)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import asyncpg

from shared.db import asyncpg_dsn
from shared.events import Envelope
from shared.logging import get_logger
from shared.privacy.crypto import Keyring

TABLES = {"ingest": "ingest.erased_identifier", "journey": "journey.erased_identifier"}
CHANNELS = {"ingest": "waypoint_ingest_tombstones", "journey": "waypoint_journey_tombstones"}
log = get_logger("privacy.tombstones")


class Markers:
    """Tenants known to have no tombstone in ``service``'s table, kept true by NOTIFY."""

    def __init__(self, service: str, dsn: str, *, max_age_seconds: float = 60.0):
        self.service = service
        self.dsn = dsn
        self.max_age_seconds = max_age_seconds
        self.clean: dict[str, float] = {}  # tenant -> when it was found without tombstones
        self.listener: asyncpg.Connection | None = None
        self.notified = 0  # notifications seen: a look-up that overlaps one is not trusted

    def _forget(self, tenant: str | None = None) -> None:
        self.notified += 1
        if tenant is None:
            self.clean.clear()
        else:
            self.clean.pop(tenant, None)

    async def listening(self) -> bool:
        """True while notifications can reach this process (connects when needed)."""
        if self.listener is not None and not self.listener.is_closed():
            return True
        self._forget()  # whatever was learnt without a listener is not to be trusted
        try:
            listener = await asyncpg.connect(asyncpg_dsn(self.dsn))
            await listener.add_listener(
                CHANNELS[self.service], lambda _c, _pid, _ch, tenant: self._forget(tenant)
            )
            listener.add_termination_listener(lambda _c: self._forget())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("tombstones.listen_failed", service=self.service, error=str(exc))
            return False
        self.listener = listener
        return True

    async def may_have(self, conn: asyncpg.Connection, tenants: Iterable[str]) -> set[str]:
        """The tenants among ``tenants`` that may have tombstones (a look-up for those not
        known clean yet; every one of them when no notification could reach us)."""
        wanted = set(tenants)
        if not await self.listening():
            return wanted
        unknown = {t for t in wanted if not self._known_clean(t)}
        if unknown:
            before = self.notified
            rows = await conn.fetch(
                f"SELECT t FROM unnest($1::text[]) AS t WHERE NOT EXISTS "  # noqa: S608
                f"(SELECT 1 FROM {TABLES[self.service]} e WHERE e.tenant_id = t)",
                sorted(unknown),
            )
            if self.notified == before:  # no erasure committed while we looked
                now = time.monotonic()
                self.clean.update((r[0], now) for r in rows)
            else:
                return wanted - {r[0] for r in rows}
        return {t for t in wanted if not self._known_clean(t)}

    def _known_clean(self, tenant: str) -> bool:
        since = self.clean.get(tenant)
        return since is not None and time.monotonic() - since < self.max_age_seconds

    def all_clean(self, tenants: Iterable[str]) -> bool:
        """Every one of ``tenants`` is known to have no tombstone (no database needed)."""
        if self.listener is None or self.listener.is_closed():
            return False
        return all(self._known_clean(t) for t in set(tenants))

    async def close(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            await self.listener.close()
        self.listener = None


async def erased(
    conn: asyncpg.Connection,
    keyring: Keyring,
    service: str,
    envelopes: Sequence[Envelope],
    markers: Markers | None = None,
) -> set[int]:
    """Indexes of ``envelopes`` that carry an erased identifier (one query per batch; none for
    tenants ``markers`` knows have no tombstone)."""
    if not envelopes:
        return set()
    if markers is not None:
        suspect = await markers.may_have(conn, {e.tenant for e in envelopes})
        if not suspect:
            return set()
        if len(suspect) < len({e.tenant for e in envelopes}):
            indexes = [i for i, e in enumerate(envelopes) if e.tenant in suspect]
            found = await erased(conn, keyring, service, [envelopes[i] for i in indexes])
            return {indexes[i] for i in found}
    await keyring.ensure(conn, {e.tenant for e in envelopes})
    # A tenant without a data key (not a tenant any more) cannot have tombstones.
    hashes: list[list[str]] = [
        [keyring.identifier_hash(e.tenant, i.key) for i in e.identifiers]
        if keyring.has(e.tenant)
        else []
        for e in envelopes
    ]
    tenants = [e.tenant for e, hs in zip(envelopes, hashes, strict=True) for _ in hs]
    flat = [h for hs in hashes for h in hs]
    rows = await conn.fetch(
        f"SELECT tenant_id, identifier_hash FROM {TABLES[service]} t "
        "JOIN unnest($1::text[], $2::text[]) AS u(tenant, hash) "
        "ON t.tenant_id = u.tenant AND t.identifier_hash = u.hash",
        tenants,
        flat,
    )
    if not rows:
        return set()
    gone = {(r["tenant_id"], r["identifier_hash"]) for r in rows}
    return {
        index
        for index, (envelope, hs) in enumerate(zip(envelopes, hashes, strict=True))
        if any((envelope.tenant, h) in gone for h in hs)
    }


async def bury(
    conn: asyncpg.Connection, service: str, tenant: str, erasure_id: str, hashes: Sequence[str]
) -> None:
    await conn.execute(
        f"INSERT INTO {TABLES[service]} (tenant_id, identifier_hash, erasure_id) "
        "SELECT $1, h, $2::uuid FROM unnest($3::text[]) AS h ON CONFLICT DO NOTHING",
        tenant,
        erasure_id,
        list(hashes),
    )
    # Every process's Markers forgets that this tenant had no tombstone, at this commit.
    await conn.execute("SELECT pg_notify($1, $2)", CHANNELS[service], tenant)
