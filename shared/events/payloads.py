"""The ``data`` of every event type (schema version 1).

Common fields sit on ``EventData``; each type adds its own. Unknown extra fields are kept
(forward compatibility), known ones are validated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.events.identifiers import (
    DEFAULT_PHONE_REGION,
    IdentifierType,
    InvalidIdentifier,
    Verification,
    normalize_identifier,
)


class Channel(StrEnum):
    phone = "phone"
    ivr = "ivr"
    web_chat = "web_chat"
    email = "email"
    social = "social"
    messenger = "messenger"
    sms = "sms"
    app = "app"
    web = "web"
    bot = "bot"
    in_person = "in_person"
    video = "video"
    other = "other"


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_utc(value: datetime) -> datetime:
    """``utc``, refusing (``ValueError``) a time that leaves the calendar once moved to UTC:
    0001-01-01T00:00:00+14:00 is in year 0 there, 9999-12-31T23:59:59-14:00 in year 10000."""
    try:
        return utc(value)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from None


# Every time Waypoint reads from a request or an event: aware, UTC, or a validation error.
UtcDateTime = Annotated[datetime, AfterValidator(to_utc)]

Scalar = str | int | float | bool | None

# Bounds of a fact (fact.collected events and facts agents record through the journey API).
FACT_NAME_MAX_CHARS = 128
FACT_VALUE_MAX_CHARS = 2_000


class Identifier(BaseModel):
    """One customer identifier; ``value`` is normalized on validation (E.164, lower-case e-mail)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: IdentifierType
    value: str = Field(min_length=1, max_length=320)
    verified_by: Verification | None = None

    @model_validator(mode="after")
    def _normalize(self, info: ValidationInfo) -> Identifier:
        context = info.context or {}
        if context.get("normalized"):  # read back after ingest normalized it: keep as stored
            return self
        region = context.get("phone_region", DEFAULT_PHONE_REGION)
        try:
            normalized = normalize_identifier(self.type, self.value, default_region=region)
        except InvalidIdentifier as exc:
            # Its own error type, so the event is refused as ``invalid_identifier``.
            raise PydanticCustomError(
                "invalid_identifier", "{reason}", {"reason": str(exc)}
            ) from exc
        object.__setattr__(self, "value", normalized)
        return self

    @property
    def key(self) -> str:
        return f"{self.type.value}:{self.value}"


class EventData(BaseModel):
    model_config = ConfigDict(extra="allow")

    identifiers: list[Identifier] = Field(min_length=1, max_length=32)
    channel: Channel | None = None
    interaction_id: str | None = Field(None, max_length=256)
    touchpoint: str | None = Field(None, max_length=128)
    department: str | None = Field(None, max_length=128)
    agent_id: str | None = Field(None, max_length=128)
    team: str | None = Field(None, max_length=128)

    @field_validator("interaction_id", "touchpoint", "department", "agent_id", "team")
    @classmethod
    def _trim(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        return v or None


class ContactStarted(EventData):
    direction: Literal["inbound", "outbound"] = "inbound"
    contact_reason: str | None = None


class ContactEnded(EventData):
    disposition: str | None = None
    contact_reason: str | None = None
    resolved: bool | None = None
    duration_s: float | None = Field(None, ge=0)


class FlowStep(EventData):
    node: str = Field(min_length=1, max_length=128)
    input: str | None = None
    menu: str | None = None


class ContactQueued(EventData):
    queue: str = Field(min_length=1, max_length=128)


class ContactAbandoned(EventData):
    where: Literal["ivr", "queue", "bot", "chat", "other"] = "queue"
    wait_s: float | None = Field(None, ge=0)
    node: str | None = None
    queue: str | None = None


class AgentJoined(EventData):
    agent_id: str = Field(min_length=1, max_length=128)


class ContactTransferred(EventData):
    from_agent: str | None = None
    to_agent: str | None = None
    to_queue: str | None = None
    to_team: str | None = None
    to_department: str | None = None
    reason: str | None = None


class Message(EventData):
    text: str | None = Field(None, max_length=20_000)
    sentiment: float | None = Field(None, ge=-1, le=1)
    # The text holds something only an admin may read (a card number, a password…): agents see
    # its timeline excerpt masked, as they see a sensitive fact's value.
    sensitive: bool = False


class CallbackRequested(EventData):
    number: str | None = None
    requested_for: UtcDateTime | None = None


class CallbackCompleted(EventData):
    outcome: str | None = None


FactValue = Annotated[str, Field(max_length=FACT_VALUE_MAX_CHARS)] | int | float | bool | None


class FactCollected(EventData):
    name: str = Field(min_length=1, max_length=FACT_NAME_MAX_CHARS)
    value: FactValue
    sensitive: bool = False
    verified_by: Verification | None = None
    expires_at: UtcDateTime | None = None


class CaseEvent(EventData):
    case_id: str = Field(min_length=1, max_length=128)
    reason: str | None = None
    status: str | None = None
    priority: str | None = None


class SurveyResponded(EventData):
    survey: Literal["csat", "nps", "ces"]
    score: float
    comment: str | None = Field(None, max_length=5_000)
    about_interaction_id: str | None = None

    @model_validator(mode="after")
    def _score_in_range(self) -> SurveyResponded:
        low, high = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}[self.survey]
        if not low <= self.score <= high:
            raise ValueError(f"{self.survey} score must be between {low} and {high}")
        return self


class IdentityLinked(EventData):
    traits: dict[str, Scalar] = Field(default_factory=dict)


class ProductUsed(EventData):
    feature: str | None = None
    quantity: float | None = Field(None, ge=0)
    active_seats: int | None = Field(None, ge=0)
    purchased_seats: int | None = Field(None, ge=0)


class MarketingTouched(EventData):
    campaign: str | None = None
    medium: str | None = None


class PurchaseCompleted(EventData):
    order_id: str | None = None
    amount: float | None = None
    currency: str | None = Field(None, min_length=3, max_length=3)


class Outcome(EventData):
    reason: str | None = None


class FeedbackSubmitted(EventData):
    author: Literal["customer", "agent"] = "customer"
    comment: str = Field(min_length=1, max_length=5_000)
    rating: float | None = None
    about: str | None = None  # touchpoint or journey step the feedback is about
