"""``waypoint worker journey maps``: the journey map's compactor as a process of its own.

The journey worker's chunk transaction only queues applied events in ``journey.map_pending``;
this process folds them into the map (``maintain.Compactor``: batch after batch while there is
work, then a poll every ``map_poll_seconds``). Profiled inside the worker it was a fifth of the
worker's CPU; on its own it uses another core and the worker's consumer loop never waits for it.

Any number may run, beside each other and beside workers that still compact in-process
(``WAYPOINT_JOURNEY_MAP_COMPACTOR_IN_WORKER``): a batch claims its customers with
``FOR UPDATE SKIP LOCKED``, so two compactors never fold one customer at once. It needs only
PostgreSQL (no broker). SIGTERM finishes the batch in hand (one transaction) and exits.

It lowers its own CPU priority (``map_nice``, default 10): the map is an eventually consistent
background fold, so on a saturated host the worker's consumer loop and the API go first and the
map catches up when CPU is free; its lag is a metric with an alert. (PostgreSQL's backend that
serves it is not reniced: its share of the upserts still competes at normal priority.)
"""

from __future__ import annotations

import asyncio
import os

from services.journey.config import JourneySettings
from services.journey.maps.maintain import Compactor
from shared.db import Database
from shared.logging import configure_logging, get_logger
from shared.worker import install_signal_handlers, tune_gc

log = get_logger("journey.maps")


async def run(
    settings: JourneySettings | None = None, *, stop: asyncio.Event | None = None
) -> None:
    """Fold the map's queue until ``stop`` is set (or SIGTERM/SIGINT when it is None)."""
    settings = settings or JourneySettings()
    own_stop = stop or asyncio.Event()
    if stop is None:  # this process is ours
        configure_logging("journey-maps", level=settings.log_level, json=settings.log_json)
        tune_gc()
        install_signal_handlers(own_stop.set)
        if settings.map_nice:  # a background fold: the worker and the API go first
            os.nice(settings.map_nice)
    db = Database(settings.dsn, pool_size=2, application_name="journey-maps")
    log.info(
        "maps.started",
        batch_customers=settings.map_batch_customers,
        batch_steps=settings.map_batch_steps,
        settle_seconds=settings.map_settle_seconds,
        nice=os.getpriority(os.PRIO_PROCESS, 0),
    )
    try:
        await Compactor(db, settings).run(own_stop)
    finally:
        await db.dispose()
        log.info("maps.stopped")
