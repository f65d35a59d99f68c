"""Contract journey → alerts: resolved customer activity (topic ``waypoint.customer.activity``).

Keyed by ``{tenant}|{customer_id}`` so one customer's activity stays in order. Version 1.
``kind`` says what happened:
- ``event``: a journey event was applied to the customer (``event`` holds the normalized event);
- ``merged``: customers ``merged_ids`` were folded into ``customer_id``;
- ``split``: ``customer_id`` was split; ``split_ids`` are the customers it became again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

ACTIVITY_SCHEMA = "waypoint.customer.activity/1"


class CustomerActivity(BaseModel):
    schema_: Literal["waypoint.customer.activity/1"] = Field(
        "waypoint.customer.activity/1", alias="schema"
    )
    kind: Literal["event", "merged", "split"] = "event"
    tenant: str
    customer_id: str
    account_id: str | None = None
    occurred_at: datetime
    # The normalized CloudEvent (as JSON) for kind == "event".
    event: dict[str, Any] | None = None
    # Current traits snapshot (tier, lifecycle_stage, region, age_group, csm_owner, …).
    traits: dict[str, Any] = Field(default_factory=dict)
    merged_ids: list[str] = Field(default_factory=list)
    split_ids: list[str] = Field(default_factory=list)

    model_config = {"populate_by_name": True}

    def kafka_key(self) -> bytes:
        return f"{self.tenant}|{self.customer_id}".encode()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))
