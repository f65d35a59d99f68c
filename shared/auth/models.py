"""Tables of the ``auth`` schema (owned by ``shared``; every service reads keys from it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, Index, String, Uuid, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata

SCHEMA = "auth"
metadata = schema_metadata(SCHEMA)


class Scope(StrEnum):
    events_write = "events:write"
    events_read = "events:read"
    context_read = "context:read"
    context_write = "context:write"  # facts; merge and split by hand
    alerts_read = "alerts:read"
    alerts_write = "alerts:write"
    analytics_read = "analytics:read"
    privacy_erase = "privacy:erase"  # erase a customer in every service (audited)
    admin = "admin"


ALL_SCOPES = [s.value for s in Scope]


class AuthBase(SQLModel):
    metadata = metadata


class Tenant(AuthBase, table=True):
    __tablename__ = "tenant"

    id: str = Field(primary_key=True, max_length=64)
    name: str
    # Country of phone numbers written without a +country code; NULL: WAYPOINT_PHONE_REGION.
    phone_region: str | None = Field(default=None, max_length=2)
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class ApiKey(AuthBase, table=True):
    __tablename__ = "api_key"
    __table_args__ = (Index("ix_api_key_tenant_id", "tenant_id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    tenant_id: str = Field(
        sa_column=Column(String(64), ForeignKey("auth.tenant.id"), nullable=False)
    )
    name: str
    # SHA-256 of the whole key. Keys are 256-bit random tokens, so a fast hash is safe and lets
    # every request be checked with one indexed look-up (GitHub and Stripe do the same).
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    display_prefix: str = Field(max_length=16)
    scopes: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    # Refused from this moment on (NULL: never); rotation sets it on the old key (grace period).
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    rotated_from: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("auth.api_key.id"), nullable=True),
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # Set when a service looks the key up (at most once a minute; lookups are cached).
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class AuditLog(AuthBase, table=True):
    """Who did what: key creation, manual merges and splits, model changes, erasures."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_id_created_at", "tenant_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=64)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=256)
    detail: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
