"""Accumulates one person's events as CloudEvent dicts (kept cheap: the generator is a hot path)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

SOURCE = "waypoint-simulator"

Ident = dict[str, str]


def ident(type_: str, value: str, verified_by: str | None = None) -> Ident:
    if verified_by is None:
        return {"type": type_, "value": value}
    return {"type": type_, "value": value, "verified_by": verified_by}


class Timeline:
    """Events of one simulated person, with stable ids ``sim-{seed}-{person}-{n}``."""

    __slots__ = ("events", "key", "prefix", "_n", "tenant", "start", "end", "now")

    def __init__(self, *, tenant: str, seed: int, person: int | str, start: float, end: float):
        self.events: list[dict[str, Any]] = []
        self.key = f"{seed}-{person}"
        self.prefix = f"sim-{self.key}-"
        self._n = 0
        self.tenant = tenant
        self.start = start
        self.end = end
        self.now = start  # the simulated clock, in epoch seconds

    def wait(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    @property
    def over(self) -> bool:
        return self.now > self.end

    def emit(
        self,
        type_: str,
        identifiers: list[Ident],
        channel: str | None = None,
        **data: Any,
    ) -> None:
        """Append one event at the current simulated time (dropped past the end of the window)."""
        self._n += 1
        if self.now > self.end:
            return
        payload: dict[str, Any] = {"identifiers": identifiers}
        if channel is not None:
            payload["channel"] = channel
        for key, value in data.items():
            if value is not None:
                payload[key] = value
        self.events.append(
            {
                "specversion": "1.0",
                "id": f"{self.prefix}{self._n}",
                "source": SOURCE,
                "type": type_,
                "time": iso(self.now),
                "tenant": self.tenant,
                "data": payload,
            }
        )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
