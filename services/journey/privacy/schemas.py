"""Erasure receipts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ErasureCreate(BaseModel):
    model_config = {"extra": "forbid"}

    reference: str | None = Field(
        None,
        max_length=200,
        description="Your request's reference (a ticket id), kept in the audit log: never put "
        "personal data here.",
    )


class ErasureStep(BaseModel):
    service: str
    status: str = Field(description="pending or done")
    completed_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict, description="Rows erased, by kind.")


class ErasurePublic(BaseModel):
    id: str
    customer_id: str
    status: str = Field(description="pending until every service has applied it, then done")
    requested_at: datetime
    services: list[ErasureStep]
