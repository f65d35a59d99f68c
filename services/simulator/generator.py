"""``generate``: simulated multi-channel customer journeys as CloudEvents 1.0 dicts.

Deterministic for a seed: the same (customers, seed, tenant, start, days) yield the same events
with the same ids (``sim-{seed}-{person}-{n}``, ``sim-{seed}-a{account}-{n}``), so sending a
seed twice is deduplicated by ingest. Without ``start`` the window ends now (nothing in the
future). One person's events come out together, in time order; people in index order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from services.simulator.builder import Timeline
from services.simulator.journeys import Journey
from services.simulator.people import make_person
from services.simulator.state import DAY
from services.simulator.usage import account_usage, user_usage

Event = dict[str, Any]


def _window(start: datetime | None, days: float) -> tuple[float, float]:
    if start is None:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        start = now - timedelta(days=days)
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    begin = start.timestamp()
    return begin, begin + days * DAY


def generate_keyed(
    *, customers: int, seed: int, tenant: str, start: datetime | None = None, days: float = 30
) -> Iterator[tuple[str, Event]]:
    """Like ``generate``, with a Kafka key per event (``tenant|sim-{seed}-{person}``)."""
    begin, end = _window(start, days)
    for index in range(customers):
        rng = random.Random(seed * 1_000_003 + index)
        person = make_person(rng, seed, index)
        # People start at different times; their first contact falls in the first third.
        offset = rng.uniform(0, days * DAY / 3)
        timeline = Timeline(tenant=tenant, seed=seed, person=index, start=begin + offset, end=end)
        Journey(person, rng, timeline, days).play()
        events = timeline.events
        if person.account is not None:
            usage = Timeline(tenant=tenant, seed=seed, person=index, start=begin, end=end)
            usage.prefix = f"sim-{seed}-{index}-u"
            user_usage(person, rng, usage, days)
            events = events + usage.events
            if index % 10 == 0:  # the account's first contact carries the account's own events
                account = person.account
                acct = Timeline(
                    tenant=tenant, seed=seed, person=f"a{account.index}", start=begin, end=end
                )
                account_usage(account, random.Random(seed * 31 + account.index), acct, days)
                events = events + acct.events
            events.sort(key=_time)
        key = f"{tenant}|sim-{seed}-{index}"
        for event in events:
            yield key, event


def _time(event: Event) -> str:
    time: str = event["time"]
    return time


def generate(
    *, customers: int, seed: int, tenant: str, start: datetime | None = None, days: float = 30
) -> Iterator[Event]:
    """Simulated journeys of ``customers`` people over ``days`` (see the module docstring)."""
    for _key, event in generate_keyed(
        customers=customers, seed=seed, tenant=tenant, start=start, days=days
    ):
        yield event
