"""Tables of the ``ingest`` schema: the event store and the operators' dead-letter log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from shared.db import schema_metadata

SCHEMA = "ingest"
metadata = schema_metadata(SCHEMA)


class IngestBase(SQLModel):
    metadata = metadata


class Event(IngestBase, table=True):
    """One validated, normalized event, stored once per (tenant, event id)."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_identifiers", "identifiers", postgresql_using="gin"),
        Index("ix_event_tenant_id_time", "tenant_id", "time", "event_id"),
    )

    tenant_id: str = Field(sa_column=Column(String(64), primary_key=True))
    event_id: str = Field(sa_column=Column(String(256), primary_key=True))
    type: str = Field(sa_column=Column(String(64), nullable=False))
    source: str = Field(sa_column=Column(String(512), nullable=False))
    time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    channel: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    # "type:value" of every normalized identifier, GIN-indexed for look-ups by customer.
    identifiers: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    envelope: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))


class DeadLetter(IngestBase, table=True):
    """An event the worker refused, with why and where it came from (the topic keeps the bytes)."""

    __tablename__ = "dead_letter"
    __table_args__ = (
        Index("ix_dead_letter_tenant_id_received_at", "tenant_id", "received_at"),
        Index(
            "uq_dead_letter_source",
            "source_topic",
            "source_partition",
            "source_offset",
            "payload_digest",
            unique=True,
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    tenant_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))
    event_id: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    source_topic: str = Field(sa_column=Column(String(255), nullable=False))
    source_partition: int = Field(sa_column=Column(Integer, nullable=False))
    source_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    payload_bytes: int = Field(sa_column=Column(Integer, nullable=False))
    # A redelivered record is logged once; a new broker reusing offsets still gets its own row.
    payload_digest: str = Field(sa_column=Column(String(64), nullable=False))
    received_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
