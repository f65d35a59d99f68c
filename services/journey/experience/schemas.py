"""Response shapes of experience and feedback (documentation; endpoints render with orjson)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ScoreRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    responses: int
    csat: dict[str, float | int | None] | None = Field(
        None, description="`n`, `mean`, `satisfied_share` (4–5)."
    )
    nps: dict[str, float | int | None] | None = Field(
        None, description="`n`, `score` (% promoters − % detractors), `promoters`, `detractors`."
    )
    ces: dict[str, float | int | None] | None = Field(None, description="`n`, `mean`.")


class Group(BaseModel):
    n: int
    mean: float


class MomentOfTruth(BaseModel):
    model_config = ConfigDict(extra="allow")

    metric: str = Field(description="csat, nps or churn.")
    kind: str = Field(description="step (with `node`) or outcome (with `outcome`).")
    with_: Group = Field(alias="with")
    without: Group
    effect: float = Field(description="Mean with − mean without (churn: rate difference).")
    ci95: list[float]
    cohens_d: float | None
    p_value: float
    adjusted_p: float = Field(description="Bonferroni: p × features tested for the metric.")
    direction: str = Field(description="better or worse with the feature.")


class ExperienceReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    journeys: int
    surveys: dict[str, int]
    unattached: int
    touchpoints: list[ScoreRow]
    edges: list[ScoreRow]
    transfers_before: list[ScoreRow]
    repeats_before: list[ScoreRow]
    stages: list[ScoreRow]
    moments_of_truth: list[MomentOfTruth]
    moments_tested: dict[str, int]


class Author(StrEnum):
    customer = "customer"
    agent = "agent"


class FeedbackSummary(BaseModel):
    count: int
    customer: int
    agent: int
    rating_n: int
    mean_rating: float | None
    latest: list[dict[str, Any]] = Field(description="The newest comments, masked.")


class FeedbackItem(BaseModel):
    event_id: str
    at: str
    author: str
    rating: float | None
    comment: str = Field(description="Masked: e-mails, phone numbers, long digit runs.")
    masked: bool
    about: str | None
    node: str | None
    attached_by: str = Field(
        description="about_node, about_step, about_touchpoint, interaction, last_step or "
        "unattached."
    )
    customer_id: str
    timeline: str


class FeedbackPage(BaseModel):
    model_config = ConfigDict(extra="allow")

    node: str | None
    summary: FeedbackSummary
    items: list[FeedbackItem]
    next_cursor: str | None
