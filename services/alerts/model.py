"""The engagement model: factor weights, decay parameters and rule thresholds, per tenant,
with per-segment overrides (keyed ``lifecycle_stage:<value>`` or ``tier:<value>``)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class Factor(StrEnum):
    activity = "activity"  # recency-decayed product use, logins, contacts the customer started
    utilisation = "utilisation"  # active / purchased seats
    cases = "cases"  # unresolved cases and repeat contacts
    friction = "friction"  # transfers and abandons suffered
    satisfaction = "satisfaction"  # CSAT / NPS / CES
    sentiment = "sentiment"  # sentiment of the customer's messages


class Rule(StrEnum):
    below_threshold = "below_threshold"
    score_drop = "score_drop"
    below_for_days = "below_for_days"


DEFAULT_WEIGHTS: dict[Factor, float] = {
    Factor.activity: 35.0,
    Factor.utilisation: 25.0,
    Factor.cases: 10.0,
    Factor.friction: 10.0,
    Factor.satisfaction: 10.0,
    Factor.sentiment: 10.0,
}


class Params(BaseModel):
    """How raw aggregates become factor values in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    activity_half_life_days: float = Field(14.0, gt=0, le=365)
    activity_target: float = Field(
        10.0, gt=0, description="Decayed activity at which the activity factor is full."
    )
    friction_half_life_days: float = Field(30.0, gt=0, le=365)
    case_limit: float = Field(3.0, gt=0, description="Open cases + repeat contacts that zero it.")
    friction_limit: float = Field(5.0, gt=0, description="Transfers + abandons that zero it.")
    repeat_window_hours: float = Field(168.0, gt=0, le=24 * 90)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_below: float = Field(40.0, ge=0, le=100)
    rearm_margin: float = Field(10.0, ge=0, le=50, description="Re-arm above threshold + margin.")
    drop_points: float = Field(25.0, gt=0, le=100)
    drop_days: int = Field(7, ge=1, le=30)
    below_days: int = Field(3, ge=1, le=90)
    cooldown_hours: float = Field(24.0, ge=0, le=24 * 90)
    rules: list[Rule] = Field(default_factory=lambda: list(Rule))


class SegmentOverride(BaseModel):
    """Anything left out falls back to the tenant's model."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[Factor, float] | None = None
    params: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[Factor, float] | None) -> dict[Factor, float] | None:
        if v is not None:
            _check_weights(v, partial=True)
        return v

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            Params.model_validate({**Params().model_dump(), **v})
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            Thresholds.model_validate({**Thresholds().model_dump(), **v})
        return v


_SEGMENT_KEY = re.compile(r"^(lifecycle_stage|tier):[^\s:]{1,64}$")


def _check_weights(weights: dict[Factor, float], *, partial: bool) -> None:
    negative = sorted(f.value for f, w in weights.items() if w < 0)
    if negative:
        raise ValueError(f"weights must be >= 0; negative: {negative}")
    if not partial and sum(weights.values()) <= 0:
        raise ValueError("at least one weight must be > 0")


class EngagementModel(BaseModel):
    """A tenant's engagement model (validated; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[Factor, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    params: Params = Field(default_factory=Params)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    segments: dict[str, SegmentOverride] = Field(default_factory=dict)
    default_owner: str | None = Field(None, max_length=128)
    _resolved: dict[str, ResolvedModel] = PrivateAttr(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[Factor, float]) -> dict[Factor, float]:
        _check_weights(v, partial=False)
        return v

    @field_validator("segments")
    @classmethod
    def _segments(cls, v: dict[str, SegmentOverride]) -> dict[str, SegmentOverride]:
        bad = sorted(k for k in v if not _SEGMENT_KEY.match(k))
        if bad:
            raise ValueError(
                f"segment keys must be 'lifecycle_stage:<value>' or 'tier:<value>'; got {bad}"
            )
        return v

    @model_validator(mode="after")
    def _segments_resolve(self) -> EngagementModel:
        for key in self.segments:
            resolved = self.for_segment(key)
            if sum(resolved.weights.values()) <= 0:
                raise ValueError(f"segment {key!r}: at least one weight must be > 0")
        return self

    def segment_of(self, traits: dict[str, Any]) -> str:
        """The most specific configured segment: lifecycle stage first, then tier."""
        for trait in ("lifecycle_stage", "tier"):
            value = traits.get(trait)
            if value is not None and f"{trait}:{value}" in self.segments:
                return f"{trait}:{value}"
        return "default"

    def for_segment(self, segment: str) -> ResolvedModel:
        """The model for one segment (memoised: models are replaced, never mutated)."""
        resolved = self._resolved.get(segment)
        if resolved is None:
            resolved = self._resolved[segment] = self._resolve(segment)
        return resolved

    def _resolve(self, segment: str) -> ResolvedModel:
        override = self.segments.get(segment)
        if override is None:
            return ResolvedModel(
                segment="default",
                weights=dict(self.weights),
                params=self.params,
                thresholds=self.thresholds,
            )
        return ResolvedModel(
            segment=segment,
            weights={**self.weights, **(override.weights or {})},
            params=Params.model_validate({**self.params.model_dump(), **(override.params or {})}),
            thresholds=Thresholds.model_validate(
                {**self.thresholds.model_dump(), **(override.thresholds or {})}
            ),
        )


class ResolvedModel(BaseModel):
    """The model that applies to one segment (tenant model + that segment's override)."""

    segment: str
    weights: dict[Factor, float]
    params: Params
    thresholds: Thresholds
