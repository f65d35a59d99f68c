"""Request and response shapes of the journey map API (plain values and pydantic models: the
worker and the compactor use ``MapQuery`` too). The query parameters become a ``MapQuery`` in
``dependencies.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.journey.maps import rules
from services.journey.maps.settings import MapConfig
from shared.errors import Unprocessable


class Granularity(StrEnum):
    touchpoint = "touchpoint"
    channel = "channel"
    stage = "stage"


class JourneyKind(StrEnum):
    customer = "customer"
    episode = "episode"
    case = "case"


class View(StrEnum):
    strategic = "strategic"
    tactical = "tactical"
    performance = "performance"


class ExportFormat(StrEnum):
    csv = "csv"
    xes = "xes"


@dataclass(frozen=True)
class MapQuery:
    granularity: str = "touchpoint"
    journey: str = "episode"
    start: date | None = None  # ``from``: journeys whose first step's UTC day is on or after
    end: date | None = None  # ``to``: … and before
    segment: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> int:
        return rules.JOURNEYS[self.journey]

    def echo(self) -> dict[str, Any]:
        return {
            "granularity": self.granularity,
            "journey": self.journey,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "segment": self.segment,
        }


def invalid(param: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"{param}: {message}",
        detail=[{"loc": f"query.{param}", "message": message, "type": "value_error"}],
    )


# --- responses (documentation; endpoints render JSON once with orjson) --------------------------


class Durations(BaseModel):
    mean: float | None = Field(description="Exact mean, seconds.")
    p50: float | None = Field(description="Median (nearest rank), seconds, within 4.4 %.")
    p90: float | None = Field(description="90th percentile (nearest rank), within 4.4 %.")


class MapNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    count: int = Field(description="Steps at this activity.")
    starts: int = Field(description="Journeys that start here.")
    ends: int = Field(description="Journeys that end here.")


class MapEdge(BaseModel):
    model_config = ConfigDict(extra="allow")

    source: str
    target: str
    count: int = Field(description="Directly-follows count (self-loops included).")
    duration_s: Durations


class JourneyMap(BaseModel):
    model_config = ConfigDict(extra="allow")

    journeys: int
    steps: int
    nodes: list[MapNode]
    edges: list[MapEdge]


class Variant(BaseModel):
    path: list[str]
    count: int
    share: float


class VariantPage(BaseModel):
    journeys: int
    variants: list[Variant]
    next_cursor: str | None


class ChannelSwitch(BaseModel):
    source: str
    target: str
    count: int
    share: float = Field(description="Share of all switches.")
    duration_s: Durations


class ChannelSwitches(BaseModel):
    channels: list[str]
    switches: list[ChannelSwitch]
    matrix: dict[str, dict[str, int]]


class ChannelShare(BaseModel):
    channel: str
    steps: int
    share: float


class SegmentMix(BaseModel):
    value: str
    steps: int
    channels: list[ChannelShare]


class ChannelMix(BaseModel):
    by: str
    segments: list[SegmentMix]


class JourneyItem(BaseModel):
    customer_id: str
    journey_key: str
    start_at: str
    steps: int
    path: list[str]
    segment: dict[str, str | None]
    timeline: str = Field(description="The customer's cross-channel timeline.")


class JourneyPage(BaseModel):
    items: list[JourneyItem]
    next_cursor: str | None
    scanned: int = Field(description="Journeys examined for this page.")


class MapConfigPublic(BaseModel):
    config: MapConfig
    recomputed: bool = False
    customers: int | None = None
    seconds: float | None = None
