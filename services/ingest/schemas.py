"""Request and response shapes of the ingest API (they document themselves in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class ItemResult(BaseModel):
    """What happened to one event of a request."""

    index: int = Field(description="Position of the item in the request (0 for a single event).")
    id: str | None = Field(None, description="The event id, when it could be read.")
    status: Literal["accepted", "rejected"]
    reason: str | None = Field(None, description="Why it was rejected (a fixed vocabulary).")
    message: str | None = Field(None, description="What exactly was wrong.")


class IngestResult(BaseModel):
    """Accepted events are durably in the raw topic (acks=all) when this is returned."""

    accepted: int
    rejected: int
    results: list[ItemResult]


class SegmentResult(IngestResult):
    """Segment's response (``success``) plus Waypoint's per-item detail."""

    success: bool


class EventPublic(BaseModel):
    id: str
    type: str
    time: datetime
    received_at: datetime
    channel: str | None
    identifiers: list[str] = Field(description='Normalized "type:value" identifiers.')
    event: dict[str, Any] = Field(description="The normalized CloudEvent as stored.")


class EventPage(BaseModel):
    items: list[EventPublic]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class DeadLetterPublic(BaseModel):
    id: int
    reason: str
    message: str
    event_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    payload: str = Field(description="The refused record (cut to the configured size).")
    payload_bytes: int
    received_at: datetime


class DeadLetterList(BaseModel):
    items: list[DeadLetterPublic]
