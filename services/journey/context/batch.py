"""Look-ups requested in the same event-loop iteration, sent as one statement (the DataLoader
pattern).

``Batcher.load(key)`` queues the key and returns its own result. The first key of a batch
schedules the flush with ``loop.call_soon``: every key queued before the loop next runs its
ready callbacks (the other requests that became runnable in the same iteration) goes in the
same batch, and a lone request goes at once (no timer, no added delay). A batch that reaches
``max_size`` keys is sent at once. One batch is one call of ``run(keys)``, which returns one
result per key, in order. If it raises, each waiter of that batch gets the exception (the
database unreachable, a connection lost, a timeout), except for the exception types given as
``per_key``: an error that one key's data can cause (PostgreSQL's class 22, e.g. a NUL
character in a text value) is not allowed to fail the other callers' look-ups, so each key of
that batch is then sent alone and each caller gets what its own statement gives, a result or
its own error. A waiter that was cancelled is skipped, the others are answered. ``observe``,
when given, is called with each statement's number of keys (the service exports it as a
histogram: look-ups per statement under real load).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R", bound=Sequence[Any])


def split_by_ordinal(rows: Sequence[R], size: int) -> list[list[R]]:
    """Rows whose last column is the 1-based ordinal of the key they answer (``WITH
    ORDINALITY``), one list per key, in the order the rows came (pure)."""
    out: list[list[R]] = [[] for _ in range(size)]
    for row in rows:
        out[int(row[-1]) - 1].append(row)
    return out


class Batcher(Generic[K, V]):
    """One ``run(keys)`` per batch of concurrent ``load(key)`` calls (at most ``max_size``)."""

    def __init__(
        self,
        run: Callable[[list[K]], Awaitable[list[V]]],
        *,
        max_size: int,
        per_key: tuple[type[Exception], ...] = (),
        observe: Callable[[int], None] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._run = run
        self._max = max_size
        self._per_key = per_key
        self._observe = observe  # called with each statement's number of keys (a metric)
        self.batches = 0  # statements sent, and the keys they carried (counters, for benches)
        self.keys = 0
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # batches in flight (kept referenced)

    async def load(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._pending.append((key, future))
        if len(self._pending) >= self._max:
            self._flush()
        elif len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:  # empty when the cap already sent it
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        self.batches += 1
        self.keys += len(batch)
        if self._observe is not None:
            self._observe(len(batch))
        try:
            results = await self._run([key for key, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} keys")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and isinstance(exc, self._per_key):
                # one key's data: each key alone, so the others are answered as if never batched
                await asyncio.gather(*(self._send([item]) for item in batch if not item[1].done()))
                return
            for _, future in batch:  # every waiter of this batch gets it
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a cancelled waiter
                future.set_result(result)
