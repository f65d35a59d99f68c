"""Request and response shapes of the agent's context API (hot paths return JSON without
re-validation)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Channel, Verification
from shared.events.payloads import FACT_NAME_MAX_CHARS, FactValue, UtcDateTime


class TimelineItem(BaseModel):
    """One event as the timeline shows it."""

    model_config = ConfigDict(extra="allow")

    event_id: str
    type: str
    time: str
    channel: str | None = None
    touchpoint: str | None = None
    agent_id: str | None = None
    outcome: str | None = None
    reason: str | None = None
    excerpt: str | None = Field(
        None, description="A message's text, on one line, cut to 160 characters."
    )
    fact: str | None = Field(None, description="A collected fact's name.")
    value: FactValue = Field(None, description="A collected fact's value (cut to 160 characters).")
    sensitive: bool | None = Field(None, description="The excerpt or value is sensitive.")
    masked: bool | None = Field(
        None, description="Shown as ••••; reveal_sensitive (admin, audited) shows it."
    )
    order_id: str | None = None
    amount: float | None = None
    currency: str | None = None


class PurchasePublic(BaseModel):
    event_id: str
    at: str | None
    order_id: str | None
    amount: float | None
    currency: str | None
    channel: str | None


class ChurnAlertPublic(BaseModel):
    alert_id: str
    status: str = Field(description="open or acknowledged (a resolved alert is not shown).")
    rules: list[str]
    score: float = Field(description="The score when the alert opened.")
    threshold: float
    opened_at: str
    acknowledged_at: str | None = None
    owner: str | None = None
    summary: str | None = None


class EngagementPublic(BaseModel):
    """The engagement score and churn alert the alerts service last published."""

    score: float | None
    threshold: float | None
    scored_at: str | None
    segment: str | None
    contributions: dict[str, float] = Field(description="Points per factor.")
    alert: ChurnAlertPublic | None
    at_risk: bool = Field(description="An alert is open, or the score is under the threshold.")
    version: int | None


class HandoffSummary(BaseModel):
    who: str = Field(description="Name (fact, else traits), else the strongest identifier.")
    likely_reason: str | None
    likely_reason_source: str | None
    open: list[str]
    do_not_ask: list[str]
    churn_risk: str | None = None
    next_step: dict[str, str]
    next_steps: list[dict[str, str]]
    text: str


class ContextPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    customer_id: str
    version: int
    identities: list[dict[str, Any]]
    traits: dict[str, Any]
    facts: list[dict[str, Any]] = Field(
        description="Facts ledger, newest first; sensitive values masked."
    )
    open_cases: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    last_agent: dict[str, Any] | None
    last_interaction: dict[str, Any] | None
    last_channel: str | None
    last_contact_reason: dict[str, Any] | None
    pending_callbacks: list[dict[str, Any]]
    surveys: dict[str, Any]
    sentiment: dict[str, Any] | None
    channels: dict[str, int]
    recent: list[TimelineItem] = Field(description="The last ten timeline items.")
    purchases: list[PurchasePublic] = Field(description="The latest five, newest first.")
    engagement: EngagementPublic | None = Field(
        description="Score and open churn alert from the alerts service; null until scored."
    )
    event_count: int
    first_seen_at: str | None
    last_seen_at: str | None
    summary: HandoffSummary


class TimelinePage(BaseModel):
    customer_id: str
    items: list[TimelineItem]
    next_cursor: str | None


class RouteHint(BaseModel):
    known: bool
    customer_id: str | None
    preferred_agent: str | None
    preferred_team: str | None
    skip_ivr: bool
    open_case: str | None
    reasons: list[str]


class FactCreate(BaseModel):
    """A fact an agent records: the bounds of a ``fact.collected`` event's fact."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=FACT_NAME_MAX_CHARS)
    value: FactValue
    sensitive: bool = False
    verified_by: Verification | None = None
    expires_at: UtcDateTime | None = None
    channel: Channel | None = None
    agent_id: str | None = Field(None, max_length=128)
    touchpoint: str | None = Field(None, max_length=128)


class FactRecorded(BaseModel):
    customer_id: str
    event_id: str
    version: int
    fact: dict[str, Any]
