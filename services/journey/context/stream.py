"""Live context updates: one LISTEN connection per API process fans NOTIFYs out to SSE clients.

The worker (and the write endpoints) ``NOTIFY`` inside their transaction, so PostgreSQL delivers
the notice only after the commit, to every API process on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Any

import asyncpg

from services.journey.context.cache import ContextCache
from shared.db import asyncpg_dsn
from shared.logging import get_logger

log = get_logger("journey.stream")
Key = tuple[str, uuid.UUID]


class ContextHub:
    def __init__(self, dsn: str, channel: str, cache: ContextCache | None = None):
        self.dsn = asyncpg_dsn(dsn)
        self.channel = channel
        self.cache = cache
        self._subscribers: dict[Key, set[asyncio.Queue[int]]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._watch = asyncio.create_task(self._keep_connected())

    async def _connect(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        self._conn.add_termination_listener(self._on_lost)
        await self._conn.add_listener(self.channel, self._on_notify)
        if self.cache is not None:  # notices may have been missed while we were away
            self.cache.clear()
            self.cache.enabled = True

    def _on_lost(self, _conn: Any) -> None:
        if self.cache is not None:
            self.cache.enabled = False
            self.cache.clear()

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if self._conn is None or self._conn.is_closed():
                self._on_lost(None)
                try:
                    await self._connect()
                    log.info("stream.reconnected")
                    for queues in self._subscribers.values():  # they may have missed a change
                        for q in queues:
                            q.put_nowait(-1)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("stream.reconnect_failed", error=str(exc))

    async def stop(self) -> None:
        if self.cache is not None:
            self.cache.enabled = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        tenant, _, rest = payload.partition("|")
        cid, _, version = rest.partition("|")
        try:
            key = (tenant, uuid.UUID(cid))
        except ValueError:
            return
        if self.cache is not None:
            self.cache.invalidate(key)
        for queue in self._subscribers.get(key, ()):
            queue.put_nowait(int(version or 0))

    def listeners(self, tenant: str, customer_id: uuid.UUID) -> int:
        """How many live streams of this customer are open here."""
        return len(self._subscribers.get((tenant, customer_id), ()))

    @contextlib.contextmanager
    def subscribe(self, tenant: str, customer_id: uuid.UUID) -> Any:
        queue: asyncio.Queue[int] = asyncio.Queue()
        key = (tenant, customer_id)
        self._subscribers[key].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[key].discard(queue)
            if not self._subscribers[key]:
                del self._subscribers[key]
