"""Small hand-built journeys for conformance and experience tests, at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.journey.config import JourneySettings
from shared.db import Database
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import deliver, email, envelope

BASE = datetime(2025, 3, 3, tzinfo=UTC)  # fixed: no test depends on today's date
S = 1_000_000
MIN, H, D = 60 * S, 3600 * S, 86400 * S


class Log:
    """Events of a few customers: ``step`` adds an interaction at a touchpoint."""

    def __init__(self) -> None:
        self.events: list[Ev] = []
        self._n = 0

    def ev(self, customer: str, kind: str, t: int, **data: Any) -> Ev:
        self._n += 1
        event = Ev(f"{customer}-{self._n:04d}", kind, t, data, customer)
        self.events.append(event)
        return event

    def traits(self, customer: str, **traits: str) -> None:
        self.ev(customer, "identity.linked", 0, traits=traits)

    def step(self, customer: str, t: int, activity: str, **data: Any) -> str:
        """A ``contact.started`` at ``channel:touchpoint``; returns its interaction id."""
        channel, _, touchpoint = activity.partition(":")
        interaction = f"{customer}-i{self._n + 1}"
        self.ev(
            customer,
            "contact.started",
            t,
            interaction_id=interaction,
            channel=channel,
            **({"touchpoint": touchpoint} if touchpoint else {}),
            **data,
        )
        return interaction


async def load(db: Database, settings: JourneySettings, tenant: str, events: list[Ev]) -> None:
    items = [envelope(tenant, e, BASE, [email(tenant, e.customer)]) for e in events]
    await deliver(db, settings, items)
