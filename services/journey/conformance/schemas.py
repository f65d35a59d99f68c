"""The designed journey (``PUT /v1/designed-journeys/{name}`` body) and response shapes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from services.journey.conformance.rules import Designed, Model
from services.journey.maps.schemas import Granularity, JourneyKind

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Activity = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class Scope(StrEnum):
    touching = "touching"
    starting = "starting"
    all = "all"


class DesignedStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    activity: Activity = Field(
        description="An activity at the design's granularity (`phone:inbound_call`, `phone`, "
        "`support`)."
    )
    optional: StrictBool = Field(False, description="A journey may leave this step out.")
    max_wait_s: float | None = Field(
        None,
        gt=0,
        le=366 * 86_400,
        description="Longest expected time from the previous designed step the journey took.",
    )


class DesignedJourney(BaseModel):
    """How a journey is meant to go."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=2000)
    granularity: Granularity = Granularity.touchpoint
    journey: JourneyKind = Field(
        JourneyKind.episode, description="Which journeys to compare: episode, customer or case."
    )
    scope: Scope = Field(
        Scope.touching,
        description="`touching`: journeys visiting a designed activity; `starting`: journeys "
        "starting at the first designed step; `all`: every journey.",
    )
    steps: list[DesignedStep] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _check(self) -> DesignedJourney:
        seen: set[str] = set()
        for step in self.steps:
            if step.activity in seen:
                raise ValueError(f"steps: {step.activity!r} is listed twice")
            seen.add(step.activity)
        if self.steps[0].max_wait_s is not None:
            raise ValueError("steps: the first step has no previous step to wait after")
        if all(s.optional for s in self.steps):
            raise ValueError("steps: at least one step must be required")
        return self

    def model(self) -> Model:
        return tuple(
            Designed(
                s.activity,
                s.optional,
                round(s.max_wait_s * 1_000_000) if s.max_wait_s is not None else None,
            )
            for s in self.steps
        )


class DesignedJourneyPublic(BaseModel):
    name: str
    version: int = Field(description="Grows by one on every change.")
    updated_at: str
    definition: DesignedJourney


class DesignedJourneyList(BaseModel):
    items: list[DesignedJourneyPublic]


class Example(BaseModel):
    customer_id: str
    journey_key: str
    start_at: str
    path: list[str]
    fitness: float
    timeline: str


class DeviationRow(BaseModel):
    kind: str = Field(description="skipped, inserted, wrong_order or too_slow.")
    step: str = Field(description="The designed (or, for inserted, the real) activity.")
    journeys: int = Field(description="Journeys with this deviation.")
    share: float = Field(description="Of the journeys measured.")
    occurrences: int
    examples: list[Example] = Field(description="A few journeys behind the number.")


class FitnessSummary(BaseModel):
    mean: float | None
    min: float | None
    p50: float | None
    histogram: dict[str, int] = Field(description="Journeys per fitness tenth (`0.9-1.0`…).")


class ConformanceGroup(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: str
    journeys: int
    conforming: int
    conforming_share: float | None
    fitness: FitnessSummary
    deviations: list[DeviationRow]


class Conformance(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    formula: str
    journeys: int = Field(description="Journeys measured (in scope).")
    computed_from: str = Field(
        description="`counts`: the maintained conformance counts; `journeys`: computed from the "
        "stored journeys when read (filters the counts cannot answer, or counts pending)."
    )
    out_of_scope: int
    conforming: int
    conforming_share: float | None
    fitness: FitnessSummary
    deviations: list[DeviationRow]
    by_segment: list[ConformanceGroup] | None = None


class ConformanceJourney(BaseModel):
    customer_id: str
    journey_key: str
    start_at: str
    path: list[str]
    fitness: float
    deviations: list[dict[str, str]]
    segment: dict[str, str | None]
    timeline: str


class ConformancePage(BaseModel):
    items: list[ConformanceJourney]
    next_cursor: str | None
    scanned: int
