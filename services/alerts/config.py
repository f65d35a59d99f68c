"""The alerts service's settings (``WAYPOINT_ALERTS_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class AlertsSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="WAYPOINT_ALERTS_", extra="ignore", populate_by_name=True
    )

    consumer_group: str = "waypoint-alerts"
    consumer_session_timeout_ms: int = 10_000
    consumer_fetch_max_wait_ms: int = Field(50, description="Low: alerts must be fast.")
    default_owner: str = Field("unassigned", description="Owner when traits carry no csm_owner.")

    # Notifier
    notifier_concurrency: int = 8
    notifier_poll_seconds: float = Field(2.0, description="Fallback when NOTIFY is missed.")
    delivery_timeout_seconds: float = 10.0
    delivery_max_attempts: int = 12
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_from: str = "waypoint-alerts@localhost"

    # Decay scheduler
    rescore_interval_seconds: float = Field(300.0, description="How often the scheduler runs.")
    rescore_after_seconds: float = Field(
        3600.0, description="A customer not rescored for this long is rescored (decay)."
    )
    rescore_batch_size: int = 5000
    rescore_concurrency: int = Field(2, ge=1, le=16, description="Batches in flight per pass.")
    processed_retention_days: int = 30

    # Engagement relay (a task of the worker process): engagement changes → journey
    engagement_poll_seconds: float = Field(
        2.0, gt=0, description="Fallback when NOTIFY is missed (changes publish at commit)."
    )
    engagement_batch_size: int = Field(500, ge=1, description="Changes published per round.")
    engagement_publish_timeout_seconds: float = Field(
        10.0, gt=0, description="Wait for the broker's acknowledgement before retrying a round."
    )
