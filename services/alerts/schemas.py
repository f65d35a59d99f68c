"""Request and response bodies of the alerts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Note(BaseModel):
    at: datetime
    by: str
    text: str


class AlertPublic(BaseModel):
    id: uuid.UUID
    customer_id: str
    account_id: str | None
    rule: str
    rules: list[str]
    status: AlertStatus
    owner: str
    segment: str
    score: float
    threshold: float
    explanation: dict[str, Any]
    notes: list[Note]
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class AlertPage(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class AlertAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=5000)


class ScorePoint(BaseModel):
    scored_at: datetime
    score: float
    previous_score: float | None
    delta: float | None
    segment: str
    cause: str
    contributions: dict[str, Any]
    event_ids: list[str]


class CustomerEngagement(BaseModel):
    customer_id: str
    account_id: str | None
    segment: str
    score: float | None
    scored_at: datetime | None
    contributions: dict[str, Any]
    open_alert_id: uuid.UUID | None
    recent_events: list[dict[str, Any]]
    history: list[ScorePoint]


class AccountCustomer(BaseModel):
    customer_id: str
    score: float | None
    segment: str


class AccountEngagement(BaseModel):
    account_id: str
    score: float | None = Field(description="Mean score of all its scored customers.")
    min_score: float | None = Field(description="Lowest score of all its customers.")
    customer_count: int = Field(description="Its customers (merged ones not counted).")
    scored_customers: int = Field(description="How many of them have a score yet.")
    customers: list[AccountCustomer] = Field(
        description="The lowest-scoring customers first, at most 1,000."
    )
    open_alerts: int


class ChannelType(StrEnum):
    webhook = "webhook"
    slack = "slack"
    email = "email"


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: ChannelType
    url: HttpUrl | None = Field(
        None,
        description="Public http(s) destination (private, loopback and metadata addresses are "
        "refused); omit to keep the stored one of a same-named channel of the same type.",
    )
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="Webhook signing secret; omit to keep the stored one of a same-named channel.",
    )
    recipients: list[str] = Field(default_factory=list, max_length=50)
    enabled: bool = True

    @model_validator(mode="after")
    def _complete(self) -> ChannelIn:
        if self.type is ChannelType.email:
            if not self.recipients:
                raise ValueError("an email channel needs recipients")
            bad = [r for r in self.recipients if not deliverable(r)]
            if bad:
                raise ValueError(
                    f"invalid e-mail recipients: {bad} (a user@domain.example address; "
                    "address literals and local names are refused)"
                )
        return self


def deliverable(address: str) -> bool:
    """user@domain with a public-looking domain: no [address literal], IP or local name that
    would make the mail relay deliver inside the network."""
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or len(address) > 320 or "." not in domain or "[" in domain:
        return False
    labels = domain.split(".")
    return not (
        all(label.isdigit() for label in labels)
        or labels[-1] in {"localhost", "local", "internal", "lan", "home", "arpa"}
    )


class ChannelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelIn] = Field(max_length=20)

    @model_validator(mode="after")
    def _unique(self) -> ChannelsIn:
        names = [c.name for c in self.channels]
        if len(names) != len(set(names)):
            raise ValueError("channel names must be unique")
        return self


class ChannelPublic(BaseModel):
    id: uuid.UUID
    name: str
    type: ChannelType
    url: str | None = Field(
        description="The destination, unless it is a secret (every Slack URL; a URL with user "
        "info or a query): then null, and only url_hint is shown."
    )
    url_hint: str | None = Field(description="Scheme, host and the URL's last 4 characters.")
    recipients: list[str]
    enabled: bool
    has_secret: bool
    secret_hint: str | None = Field(description="The signing secret's last 4 characters.")
    created_at: datetime


class ChannelsPublic(BaseModel):
    channels: list[ChannelPublic]


class ModelPublic(BaseModel):
    version: int = Field(description="0 means the built-in default model.")
    updated_at: datetime | None
    model: dict[str, Any]


class ChurnReasonRow(BaseModel):
    segment: str
    outcome: Literal["churned", "renewed"]
    reason: str | None
    customers: int
    alerted: int = Field(description="Customers with an alert in the 180 days before.")
    median_lead_time_days: float | None


class ChurnReport(BaseModel):
    since: datetime | None
    rows: list[ChurnReasonRow]


class BacktestRow(BaseModel):
    threshold: float
    churned: int = Field(description="Customers who churned since `since`.")
    churned_flagged_before: int = Field(
        description="Of those, scored below the threshold within `horizon_days` before churning."
    )
    recall: float | None
    flagged: int = Field(description="Customers scored below the threshold since `since`.")
    flagged_then_churned: int = Field(description="Of those, churned within `horizon_days`.")
    precision: float | None
    median_lead_time_days: float | None


class BacktestReport(BaseModel):
    since: datetime
    horizon_days: int
    rows: list[BacktestRow]
