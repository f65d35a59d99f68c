"""A tenant's map configuration: stage mapping, episode window, tenure bands (validated).

The stage mapping is applied when a map is read, so editing it changes nothing stored. The
episode window and the tenure bands shape the stored journeys and segments: changing either
recomputes the tenant's map from its step log (see ``rebuild.recompute_tenant``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.journey.maps.activities import STAGES
from services.journey.maps.rules import DAY_US

StageName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
HOUR_US = DAY_US // 24


class MapConfig(BaseModel):
    """``PUT /v1/journey-map/config`` body and what the map is computed with."""

    model_config = ConfigDict(extra="forbid")

    stages: dict[Annotated[str, StringConstraints(min_length=1, max_length=300)], StageName] = (
        Field(
            default_factory=dict,
            max_length=2000,
            description=(
                "Stage of a touchpoint activity (`ivr:billing_menu`) or of a whole channel "
                "(`ivr`); anything not listed gets the documented default stage."
            ),
        )
    )
    stage_order: list[StageName] = Field(
        default_factory=lambda: list(STAGES),
        max_length=50,
        description="Display order of stages in the strategic view.",
    )
    episode_window_hours: float = Field(
        168.0,
        gt=0,
        le=24 * 366,
        description="An episode ends where a customer is inactive for longer than this.",
    )
    tenure_bands_days: list[Annotated[int, Field(gt=0, le=36_500)]] = Field(
        default_factory=lambda: [30, 90, 365],
        max_length=12,
        description="Upper bounds of the tenure bands (days from first seen to journey start).",
    )

    @field_validator("tenure_bands_days")
    @classmethod
    def _increasing(cls, bands: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(bands, bands[1:], strict=False)):
            raise ValueError("tenure bands must be strictly increasing")
        return bands

    @field_validator("stage_order")
    @classmethod
    def _unique(cls, order: list[str]) -> list[str]:
        if len(set(order)) != len(order):
            raise ValueError("stage_order lists a stage twice")
        return order

    @property
    def window_us(self) -> int:
        return round(self.episode_window_hours * HOUR_US)

    @property
    def bands(self) -> tuple[int, ...]:
        return tuple(self.tenure_bands_days)

    def shapes_journeys_like(self, other: MapConfig) -> bool:
        """True when the stored journeys and segments need no recomputation."""
        return self.window_us == other.window_us and self.bands == other.bands
