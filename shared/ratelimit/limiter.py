"""Per key, per tenant and per client-IP limits, shared by every API process, and cheap on the
request path.

Each limit is a sliding window over two fixed windows aligned on the epoch (so every process
agrees on them): ``estimate = previous × (1 − elapsed fraction) + current``, the approximation
Cloudflare and Redis' own docs describe. A request is a few dictionary look-ups in this process
and never waits for the store: each process counts locally and a background task adds its
counts to the shared store (PostgreSQL or Redis) every ``sync_seconds``, sooner when a bucket
nears its limit, and learns the totals of every process in the same round trip.

Accuracy: one process alone is exact. With P processes, a burst can pass a limit by what the
other processes admitted since their last sync (at most their rate × ``sync_seconds``), and a
store outage leaves each process limiting on its own counts (logged, counted in
``waypoint_rate_limit_sync_failures_total``) until the store answers again, when the counts
held back are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from shared.errors import TooManyRequests
from shared.logging import get_logger
from shared.ratelimit.stores import Cell, CounterStore

log = get_logger("ratelimit")

RATE_LIMITED = Counter(
    "waypoint_rate_limited_total",
    "Requests refused with 429, by kind (read, write, auth) and limit scope (key, tenant, ip).",
    ["kind", "scope"],
)
SYNC_FAILURES = Counter(
    "waypoint_rate_limit_sync_failures_total",
    "Failed round trips to the shared rate-limit store (limits stay local meanwhile).",
)
NEAR_LIMIT = 0.8  # past this share of a limit, sync sooner than the interval


@dataclass(frozen=True, slots=True)
class Limits:
    window: int = 60
    key_reads: int = 0
    key_writes: int = 0
    tenant_reads: int = 0
    tenant_writes: int = 0
    auth_failures: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            window=settings.rate_limit_window_seconds,
            key_reads=settings.rate_limit_key_reads,
            key_writes=settings.rate_limit_key_writes,
            tenant_reads=settings.rate_limit_tenant_reads,
            tenant_writes=settings.rate_limit_tenant_writes,
            auth_failures=settings.rate_limit_auth_failures,
        )


class RateLimiter:
    def __init__(
        self,
        limits: Limits,
        store: CounterStore | None = None,
        *,
        sync_seconds: float = 0.5,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self.limits = limits
        self.store = store
        self.enabled = enabled
        self.sync_seconds = sync_seconds
        self._min_gap = sync_seconds / 10
        self._clock = clock
        # Every process's hits as last learned from the store, plus this process's since then.
        self._counts: dict[Cell, int] = {}
        self._pending: dict[Cell, int] = {}  # this process's hits not yet sent to the store
        self._names: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self._wake = asyncio.Event()
        self._oldest = 0

    # -- the request path: no I/O --------------------------------------------------------------

    def check_request(self, key_id: str, tenant_id: str, *, write: bool) -> None:
        """Count one request of a valid key, or raise ``TooManyRequests`` (nothing counted)."""
        if not self.enabled:
            return
        names = self._names.get((key_id, tenant_id))
        if names is None:
            if len(self._names) > 100_000:
                self._names.clear()
            names = (f"k:{key_id}:r", f"t:{tenant_id}:r", f"k:{key_id}:w", f"t:{tenant_id}:w")
            self._names[(key_id, tenant_id)] = names
        limits = self.limits
        if write:
            key_bucket, tenant_bucket = names[2], names[3]
            key_limit, tenant_limit, kind = limits.key_writes, limits.tenant_writes, "write"
        else:
            key_bucket, tenant_bucket = names[0], names[1]
            key_limit, tenant_limit, kind = limits.key_reads, limits.tenant_reads, "read"
        now = self._clock()
        if key_limit > 0:
            self._refuse_if_over(key_bucket, key_limit, now, kind, "key", f"{kind}s for this key")
        if tenant_limit > 0:
            self._refuse_if_over(
                tenant_bucket, tenant_limit, now, kind, "tenant", f"{kind}s for this tenant"
            )
        if key_limit > 0:
            self._hit(key_bucket, key_limit, now)
        if tenant_limit > 0:
            self._hit(tenant_bucket, tenant_limit, now)

    def auth_check(self, client: str | None) -> None:
        """Before looking up a key this process has not seen valid: ``TooManyRequests`` if
        ``client`` (its IP) is past its failed-authentication limit. Failures are counted when
        they happen (``auth_failed``), so concurrent guesses can pass the limit by the look-ups
        in flight at once; counting in advance would instead refuse valid keys that arrive
        together (an agent floor behind one address reconnecting after a restart)."""
        limit = self.limits.auth_failures
        if self.enabled and limit > 0 and client:
            self._refuse_if_over(
                f"ip:{client}:a", limit, self._clock(), "auth", "ip", "failed authentications"
            )

    def auth_failed(self, client: str | None) -> None:
        limit = self.limits.auth_failures
        if self.enabled and limit > 0 and client:
            self._hit(f"ip:{client}:a", limit, self._clock())

    def _refuse_if_over(
        self, bucket: str, limit: int, now: float, kind: str, scope: str, what: str
    ) -> None:
        window = self.limits.window
        start = int(now // window) * window
        current = self._counts.get((bucket, start), 0)
        previous = self._counts.get((bucket, start - window), 0)
        estimate = previous * (1 - (now - start) / window) + current
        if estimate + 1 <= limit:
            return
        RATE_LIMITED.labels(kind, scope).inc()
        retry = _retry_after(limit - 1, now, start, window, current, previous)
        raise TooManyRequests(
            f"rate limit reached: {limit} {what} per {window} s; retry in {retry} s",
            limit=limit,
            retry_after=retry,
            window=window,
        )

    def _hit(self, bucket: str, limit: int, now: float, hits: int = 1) -> None:
        window = self.limits.window
        cell = (bucket, int(now // window) * window)
        count = self._counts[cell] = self._counts.get(cell, 0) + hits
        if self.store is not None:
            self._pending[cell] = self._pending.get(cell, 0) + hits
            if hits > 0 and count >= NEAR_LIMIT * limit:
                self._wake.set()

    # -- the background task -------------------------------------------------------------------

    async def sync(self) -> None:
        """Send this process's new counts; learn every process's totals for those buckets."""
        self._forget_old(self._clock())
        if self.store is None or not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            totals = await self.store.add(sorted(batch.items()), self.limits.window)
        except Exception as exc:  # noqa: BLE001 - any store failure: count locally, retry later
            SYNC_FAILURES.inc()
            log.warning("ratelimit.sync_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            for cell, hits in batch.items():
                self._pending[cell] = self._pending.get(cell, 0) + hits
            return
        for cell, total in totals.items():  # the total includes the batch, not what came since
            self._counts[cell] = total + self._pending.get(cell, 0)

    def _forget_old(self, now: float) -> None:
        """Drop windows before the previous one (once per window)."""
        oldest = (int(now // self.limits.window) - 1) * self.limits.window
        if oldest == self._oldest:
            return
        self._oldest = oldest
        for table in (self._counts, self._pending):
            stale = [cell for cell in table if cell[1] < oldest]
            for cell in stale:
                del table[cell]

    async def run(self) -> None:
        """Sync every ``sync_seconds``, or sooner (never closer than a tenth of it) when a
        bucket nears its limit. Cancel to stop; ``close`` sends what is left."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.sync()
            gap = self._min_gap - (loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sync_seconds - self._min_gap)
            self._wake.clear()

    async def close(self) -> None:
        await self.sync()
        if self.store is not None:
            await self.store.close()


def _retry_after(
    allowed: int, now: float, start: int, window: int, current: int, previous: int
) -> int:
    """Seconds until the estimate falls to ``allowed`` if nothing else is counted."""
    if current <= allowed and previous > 0:
        at = start + window * (1 - (allowed - current) / previous)
        if at <= start + window:
            return max(1, math.ceil(at - now))
    at = start + window + window * max(0.0, 1 - allowed / max(current, 1))
    return max(1, math.ceil(at - now))
