"""Contract journey → every service: erase a customer (topic ``waypoint.privacy.erasure``).

Keyed by ``{tenant}|{customer_id}``. Version 1. Journey's API publishes it once the receipt is
stored; ingest, journey and alerts each apply it idempotently (a redelivered or replayed command
erases nothing more and reports the same completion). It carries no erased value in the clear:
the identifiers are sealed with the tenant's data key (only Waypoint's processes open them) and
named by their tombstone hashes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, Field

ERASURE_SCHEMA = "waypoint.privacy.erasure/1"
ERASING_SERVICES = ("ingest", "journey", "alerts")


class CustomerErasureRequested(BaseModel):
    schema_: Literal["waypoint.privacy.erasure/1"] = Field(
        "waypoint.privacy.erasure/1", alias="schema"
    )
    erasure_id: str
    tenant: str
    customer_id: str = Field(description="The customer asked for (the surviving one).")
    customer_ids: list[str] = Field(description="It and every customer merged into it.")
    identifier_hashes: list[str] = Field(description="Tombstone hashes of its identifiers.")
    identifiers_sealed: str | None = Field(
        None, description='Its "type:value" identifiers as a JSON list, sealed for the tenant.'
    )
    requested_at: datetime

    model_config = {"populate_by_name": True}

    def key(self) -> bytes:
        return f"{self.tenant}|{self.customer_id}".encode()

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))
