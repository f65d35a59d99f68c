"""Contract alerts → journey: a customer's engagement changed (topic
``waypoint.customer.engagement``).

Keyed by ``{tenant}|{customer_id}``. Version 1. Each message is the customer's whole current
engagement (score, threshold, the open churn alert if any), never a delta, so a consumer keeps
the one with the highest ``version`` and may drop any other: ``version`` grows with every change
of one customer (it is at least the previous version + 1, and at least the change's time in
microseconds since the epoch, so it keeps growing even if the alerts schema is rebuilt). Delivery
is at least once and, across partitions or after a retry, possibly out of order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, Field

ENGAGEMENT_SCHEMA = "waypoint.customer.engagement/1"


class ChurnAlert(BaseModel):
    """The customer's open (or acknowledged) churn alert."""

    alert_id: str
    status: Literal["open", "acknowledged"]
    rules: list[str]
    score: float = Field(description="The score when the alert opened.")
    threshold: float
    opened_at: datetime
    acknowledged_at: datetime | None = None
    owner: str | None = None
    summary: str | None = Field(None, description="One line: why the alert opened.")


class CustomerEngagementChanged(BaseModel):
    schema_: Literal["waypoint.customer.engagement/1"] = Field(
        "waypoint.customer.engagement/1", alias="schema"
    )
    tenant: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=256)
    version: int = Field(ge=1)
    changed_at: datetime
    score: float | None = Field(None, description="Engagement 0-100; None before the first score.")
    scored_at: datetime | None = None
    segment: str | None = None
    threshold: float | None = Field(None, description="The segment's alert threshold.")
    contributions: dict[str, float] = Field(
        default_factory=dict, description="Points per factor, summing to the score."
    )
    alert: ChurnAlert | None = None
    merged_into: str | None = None

    model_config = {"populate_by_name": True}

    def kafka_key(self) -> bytes:
        return f"{self.tenant}|{self.customer_id}".encode()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))
