"""Settings of the ingest service (environment prefix ``WAYPOINT_INGEST_``)."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings
from shared.events import MAX_EVENT_BYTES


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="WAYPOINT_INGEST_", extra="ignore", populate_by_name=True
    )

    consumer_group: str = Field("waypoint-ingest", description="Kafka consumer group of workers.")
    # 1,000, not 5,000: a 5,000-record batch took the worker to 159 MB under a backlog, 1,000 to
    # 123 MB, at the same CPU per event (docs/benchmarks.md "Memory").
    batch_size: int = Field(
        1000, ge=1, description="Most records handled per batch (bounds the worker's memory)."
    )
    poll_timeout_ms: int = Field(100, ge=1, description="How long one poll waits for records.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer session timeout.")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        description="Longest a fetch waits for data (brokers that do not answer a waiting fetch "
        "as soon as data arrives add up to this much latency).",
    )
    max_event_bytes: int = Field(MAX_EVENT_BYTES, ge=1024, description="Largest single event.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest HTTP request body.")
    max_batch_items: int = Field(1000, ge=1, description="Most events in one HTTP batch.")
    max_future_seconds: float = Field(
        300.0, ge=0, description="How far an event's time may lie ahead of the server clock."
    )
    tenant_refresh_seconds: float = Field(
        1.0, ge=0, description="Least time between re-reads of the tenant list on a miss."
    )
    tenant_cache_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a worker keeps tenants' settings (a changed phone region applies "
        "to events read after this).",
    )
    dead_letter_payload_bytes: int = Field(
        16 * 1024, ge=256, description="Raw payload kept per dead-letter row (the topic keeps all)."
    )

    @cached_property
    def max_future(self) -> timedelta:
        return timedelta(seconds=self.max_future_seconds)
