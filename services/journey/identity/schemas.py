"""Request and response shapes of the identity API: the identity graph, merge and split."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IdentityGraph(BaseModel):
    customer_id: str
    identifiers: list[dict[str, Any]]
    merges: list[dict[str, Any]]
    splits: list[dict[str, Any]]
    provisional_links: list[dict[str, Any]]


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    reason: str | None = Field(None, max_length=500)


class MergeResponse(BaseModel):
    merge_id: int
    survivor_id: str
    merged_id: str
    version: int


class SplitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merge_id: int | None = Field(None, description="The merge to undo; default the latest one.")
    reason: str | None = Field(None, max_length=500)


class SplitResponse(BaseModel):
    merge_id: int
    customer_id: str
    restored_id: str
    moved_events: int
    moved_identifiers: int
