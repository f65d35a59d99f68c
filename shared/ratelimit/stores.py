"""Where the processes' counts meet: a PostgreSQL table (the default) or Redis.

PostgreSQL is the default because every deployment already has it and the limiter sends one
statement per process per sync interval, whatever the request rate; Redis is for deployments
that run it anyway, or so many API processes that their syncs would load the database.
Both are counters keyed by (bucket, window start): no locks held beyond one statement.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from shared.db import Database, raw_connection

Cell = tuple[str, int]  # (bucket, window start in epoch seconds)


class CounterStore(Protocol):
    async def add(self, cells: list[tuple[Cell, int]], window: int) -> dict[Cell, int]:
        """Add each count to its cell; return every cell's total (all processes)."""

    async def close(self) -> None: ...


# Rows arrive sorted by (bucket, window start), so concurrent processes lock them in one order
# and never deadlock. The table is UNLOGGED: counters need no crash safety and skip the WAL.
_UPSERT = """
INSERT INTO auth.rate_counter AS c (bucket, window_start, hits)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
ON CONFLICT (bucket, window_start) DO UPDATE SET hits = c.hits + EXCLUDED.hits
RETURNING bucket, window_start, hits
"""


class PostgresCounterStore:
    def __init__(self, db: Database):
        self.db = db
        self._cleaned_at = 0.0

    async def add(self, cells: list[tuple[Cell, int]], window: int) -> dict[Cell, int]:
        async with self.db.session() as session:
            conn = await raw_connection(session)
            rows = await conn.fetch(
                _UPSERT,
                [bucket for (bucket, _), _ in cells],
                [start for (_, start), _ in cells],
                [hits for _, hits in cells],
            )
            now = time.time()
            if now - self._cleaned_at > window:  # any process may clean; each does so rarely
                self._cleaned_at = now
                await conn.execute(
                    "DELETE FROM auth.rate_counter WHERE window_start < $1",
                    int(now) - 2 * window,
                )
        return {(r["bucket"], r["window_start"]): r["hits"] for r in rows}

    async def close(self) -> None:
        """The database belongs to the app."""


# One command for the whole batch (a pipeline of INCRBY + EXPIRE costs redis-py two commands per
# bucket to pack and parse). The keys share the hash tag {rl}, so Redis Cluster accepts them.
_ADD_SCRIPT = """
local totals = {}
for i, key in ipairs(KEYS) do
  totals[i] = redis.call('INCRBY', key, ARGV[i])
  redis.call('EXPIRE', key, ARGV[#ARGV])
end
return totals
"""


class RedisCounterStore:
    def __init__(self, url: str, *, prefix: str = "waypoint:{rl}:"):
        import redis.asyncio as redis

        self.client: Any = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.prefix = prefix
        self._add = self.client.register_script(_ADD_SCRIPT)

    async def add(self, cells: list[tuple[Cell, int]], window: int) -> dict[Cell, int]:
        keys = [f"{self.prefix}{bucket}:{start}" for (bucket, start), _ in cells]
        totals = await self._add(keys=keys, args=[hits for _, hits in cells] + [2 * window + 5])
        return {cell: int(total) for (cell, _), total in zip(cells, totals, strict=True)}

    async def close(self) -> None:
        await self.client.aclose()


def make_store(settings: Any, db: Database) -> CounterStore:
    """Redis when ``WAYPOINT_REDIS_URL`` is set, else the PostgreSQL table."""
    if settings.redis_url:
        return RedisCounterStore(settings.redis_url)
    return PostgresCounterStore(db)
