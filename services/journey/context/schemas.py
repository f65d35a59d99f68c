"""Request and response shapes of the agent's context API (hot paths return JSON without
re-validation)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Channel, Verification
from shared.events.payloads import FACT_NAME_MAX_CHARS, FactValue, UtcDateTime


class HandoffSummary(BaseModel):
    who: str
    likely_reason: str | None
    likely_reason_source: str | None
    open: list[str]
    do_not_ask: list[str]
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
    recent: list[dict[str, Any]]
    event_count: int
    first_seen_at: str | None
    last_seen_at: str | None
    summary: HandoffSummary


class TimelinePage(BaseModel):
    customer_id: str
    items: list[dict[str, Any]]
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
