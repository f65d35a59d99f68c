"""The loop of a process that works off a table: woken by NOTIFY, polling as the fallback,
backing off after failures, until told to stop.

The outbox relays (``shared/outbox.py``: journey's activity, alerts' engagement changes) and
alerts' notifier run on it. Each pass (``work_once``) does what is due and says how long to wait
at most before the next; a pass that raises is counted by the subclass (``failed``) and the next
one waits ``retry.after(consecutive failures)`` instead. A NOTIFY on ``channel`` (a writer in
another process committed), ``wake()`` (one in this process did) or ``stop`` ends the wait early.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import structlog

from shared.db import asyncpg_dsn


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base``, 2·``base``, 4·``base`` … capped at ``cap``, then ± ``jitter``
    (a fraction: 0.2 spreads each wait over 80–120 %, so retries of many processes spread)."""

    base: float
    cap: float
    jitter: float = 0.2

    def after(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure (1: the first)."""
        delay = min(self.cap, self.base * 2 ** (failures - 1))
        if not self.jitter:
            return float(delay)
        return float(delay * random.uniform(1 - self.jitter, 1 + self.jitter))  # noqa: S311


class ListenLoop(ABC):
    def __init__(
        self,
        *,
        dsn: str,
        channel: str,
        poll_seconds: float,
        retry: Backoff,
        log: structlog.stdlib.BoundLogger,
        event_prefix: str,
        log_fields: Mapping[str, str] | None = None,
    ):
        self.dsn = dsn
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.retry = retry
        self.log = log
        self.event_prefix = event_prefix  # log events: ``<prefix>.listen_failed``
        self.log_fields = dict(log_fields or {})  # added to every log event
        self.wakeup = asyncio.Event()
        self.listener: asyncpg.Connection | None = None

    def wake(self) -> None:
        """Something is due now (a writer of this process committed): start a pass."""
        self.wakeup.set()

    @abstractmethod
    async def work_once(self) -> float:
        """One pass over what is due; returns how long to wait at most before the next."""

    @abstractmethod
    def failed(self, failures: int) -> None:
        """A pass raised (``failures`` in a row): count and log it (inside ``except``)."""

    async def stopped(self) -> None:  # noqa: B027 - a hook: most loops need nothing here
        """After the last pass, once ``stop`` is set (nothing by default)."""

    async def _listen(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            return
        try:
            self.listener = await asyncpg.connect(asyncpg_dsn(self.dsn))
            await self.listener.add_listener(self.channel, lambda *_: self.wakeup.set())
        except (OSError, asyncpg.PostgresError) as exc:
            self.log.warning(
                f"{self.event_prefix}.listen_failed", error=str(exc), **self.log_fields
            )
            self.listener = None

    async def run(self, stop: asyncio.Event) -> None:
        """Work whenever woken (or when a pass's wait is over) until ``stop``."""
        failures = 0
        while not stop.is_set():
            await self._listen()
            self.wakeup.clear()
            try:
                wait = await self.work_once()
                failures = 0
            except Exception:  # noqa: BLE001 - counted and logged by ``failed``, then retried
                failures += 1
                self.failed(failures)
                wait = self.retry.after(failures)
            waker = asyncio.create_task(self.wakeup.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([waker, stopper], timeout=wait, return_when="FIRST_COMPLETED")
            waker.cancel()
            stopper.cancel()
        await self.stopped()

    async def close(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            await self.listener.close()
