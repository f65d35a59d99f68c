"""Who holds this key? One indexed look-up, remembered in two bounded caches.

- Valid keys (LRU, ``max_entries``): answered from memory for ``ttl`` seconds, then read again
  (revocation and scope changes take at most ``ttl``), once: concurrent requests with the
  same key wait for that one look-up. Expiry is checked on every request
  against the wall clock, so a key stops working at its ``expires_at`` to the second.
- Rejected keys (LRU with TTL, apart from the valid ones): a repeated junk key costs no
  database look-up, and a flood of random keys evicts only other junk, never a valid key.
- A client IP past its failed-authentication limit (``RateLimiter.auth_check``) gets 429
  without a look-up for any key this process has not seen valid: random keys cost nothing,
  and the keys its agents already use keep working.
- ``last_used_at`` is written at most once per ``last_used_every`` seconds per key and process:
  with the look-up when the stored one is that old (the row is being read anyway), and for uses
  answered from the cache in the background (``save_last_used``), never per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import text

from shared.auth.principal import Principal, hash_key
from shared.errors import Unauthorized
from shared.logging import get_logger
from shared.ratelimit.limiter import RateLimiter

log = get_logger("auth.verifier")

KEY_LOOKUPS = Counter(
    "waypoint_api_key_lookups_total",
    "API key look-ups in the database (cache misses), by outcome (valid, unknown).",
    ["outcome"],
)
AUTH_FAILURES = Counter(
    "waypoint_auth_failures_total",
    "Requests refused with 401, by reason (missing, unknown, expired).",
    ["reason"],
)
INVALID = "invalid or revoked API key"
_TOUCH = (
    "UPDATE auth.api_key SET last_used_at = now() WHERE id = ANY(CAST(:ids AS uuid[])) "
    "AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => :every))"
)


@dataclass(frozen=True, slots=True)
class _Known:
    principal: Principal
    expires_at: float | None  # epoch seconds
    fresh_until: float  # monotonic: read it again from the database after this


class KeyVerifier:
    def __init__(
        self,
        sessionmaker: Any,
        ttl: float = 30.0,
        max_entries: int = 10_000,
        *,
        rejected_entries: int = 10_000,
        rejected_ttl: float = 60.0,
        limiter: RateLimiter | None = None,
        last_used_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._max = max_entries
        self._rejected_max = rejected_entries
        self._rejected_ttl = rejected_ttl
        self._limiter = limiter
        self._every = last_used_every
        self._clock = clock  # when a cached answer must be read again (tests move it)
        self._valid: OrderedDict[str, _Known] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()  # digest → until (monotonic)
        self._used: dict[str, float] = {}  # key id → when its use was last noted (epoch)
        self._unsaved_uses: set[str] = set()
        self.lookups = 0  # database look-ups by this verifier (tests and benchmarks read it)
        self._pending: dict[str, asyncio.Future[_Known | None]] = {}  # digest → its look-up

    async def verify(self, key: str | None, *, client: str | None = None) -> Principal:
        """The principal of ``key``; 401 if missing, unknown, revoked or expired; 429 if
        ``client`` (its IP) failed too often and the key is not one seen valid here."""
        now = self._clock()
        digest = hash_key(key) if key else ""
        known = self._valid.get(digest) if key else None
        if known is not None and known.fresh_until > now:
            self._valid.move_to_end(digest)
        else:
            if known is None:  # not seen valid here: it costs the guesser, not the database
                if self._limiter is not None:
                    self._limiter.auth_check(client)  # 429 past the limit
                if not key:
                    raise self._failed(client, "missing", "missing or invalid API key")
                if self._is_rejected(digest, now):
                    raise self._failed(client, "unknown", INVALID)
            known = await self._shared_lookup(digest, now)
            if known is None:
                self._valid.pop(digest, None)
                self._reject(digest, now)
                raise self._failed(client, "unknown", INVALID)
            self._valid[digest] = known
            self._valid.move_to_end(digest)
            if len(self._valid) > self._max:
                self._valid.popitem(last=False)
        if known.expires_at is not None and known.expires_at <= time.time():
            expired = datetime.fromtimestamp(known.expires_at, UTC).isoformat(timespec="seconds")
            raise self._failed(
                client,
                "expired",
                f"this API key expired at {expired}; use its successor or create a new key",
            )
        self._note_use(known.principal.key_id)
        return known.principal

    def _failed(self, client: str | None, reason: str, message: str) -> Unauthorized:
        AUTH_FAILURES.labels(reason).inc()
        if self._limiter is not None:
            self._limiter.auth_failed(client)
        return Unauthorized(message)

    def _is_rejected(self, digest: str, now: float) -> bool:
        until = self._rejected.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._rejected[digest]
            return False
        return True

    def _reject(self, digest: str, now: float) -> None:
        if self._rejected_max <= 0 or self._rejected_ttl <= 0:
            return
        self._rejected[digest] = now + self._rejected_ttl
        self._rejected.move_to_end(digest)
        if len(self._rejected) > self._rejected_max:
            self._rejected.popitem(last=False)

    async def _shared_lookup(self, digest: str, now: float) -> _Known | None:
        """One database look-up per key at a time: the requests that find the key's cached
        answer stale (every ``ttl`` seconds) while its look-up is running wait for that one,
        instead of each taking a pooled connection for the same row (under load they queued
        for the pool together and stalled every request of the key). Shielded: a waiter that
        is cancelled does not cancel the others' look-up."""
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(digest, now))
            self._pending[digest] = pending
            pending.add_done_callback(lambda done: self._looked_up(digest, done))
        return await asyncio.shield(pending)

    def _looked_up(self, digest: str, done: asyncio.Future[_Known | None]) -> None:
        if self._pending.get(digest) is done:
            del self._pending[digest]
        if not done.cancelled():
            done.exception()  # retrieved: with every waiter gone, asyncio would log it

    async def _lookup(self, digest: str, now: float) -> _Known | None:
        self.lookups += 1
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT k.id, k.tenant_id, k.scopes, k.expires_at, k.last_used_at, "
                        "t.phone_region FROM auth.api_key k "
                        "JOIN auth.tenant t ON t.id = k.tenant_id "
                        "WHERE k.key_hash = :h AND k.revoked_at IS NULL"
                    ),
                    {"h": digest},
                )
            ).first()
            if row is not None and self._stale(row.last_used_at):
                # Already reading the row: write its last use now if that is a minute old
                # (a conditional UPDATE; uses answered from the cache are saved in the background).
                await session.execute(text(_TOUCH), {"ids": [str(row.id)], "every": self._every})
                await session.commit()
                self._used[str(row.id)] = time.time()
        KEY_LOOKUPS.labels("unknown" if row is None else "valid").inc()
        if row is None:
            return None
        principal = Principal(
            tenant_id=row.tenant_id,
            key_id=str(row.id),
            scopes=frozenset(row.scopes),
            phone_region=row.phone_region,
        )
        expires = row.expires_at.timestamp() if row.expires_at is not None else None
        return _Known(principal, expires, now + self._ttl)

    def forget(self) -> None:
        self._valid.clear()
        self._rejected.clear()

    # -- last_used_at --------------------------------------------------------------------------

    def _note_use(self, key_id: str) -> None:
        now = time.time()
        last = self._used.get(key_id)
        if last is not None and now - last < self._every:
            return
        if len(self._used) >= self._max:  # only a throttle: forgetting costs one extra write
            self._used.clear()
        self._used[key_id] = now
        self._unsaved_uses.add(key_id)

    async def save_last_used(self) -> int:
        """Write the noted uses (one statement); returns how many keys it covered."""
        if not self._unsaved_uses:
            return 0
        ids, self._unsaved_uses = sorted(self._unsaved_uses), set()
        try:
            await self._save(ids)
        except BaseException:
            self._unsaved_uses.update(ids)
            raise
        return len(ids)

    async def _save(self, ids: list[str]) -> None:
        async with self._sessionmaker() as session:
            await session.execute(text(_TOUCH), {"ids": ids, "every": self._every})
            await session.commit()

    def _stale(self, last_used_at: datetime | None) -> bool:
        return last_used_at is None or time.time() - last_used_at.timestamp() >= self._every

    async def run(self) -> None:
        """Save noted uses every few seconds until cancelled."""
        while True:
            await asyncio.sleep(min(self._every, 5.0))
            try:
                await self.save_last_used()
            except Exception as exc:  # noqa: BLE001 - bookkeeping; the next round retries
                log.warning("auth.last_used_failed", error=f"{type(exc).__name__}: {exc}"[:300])
