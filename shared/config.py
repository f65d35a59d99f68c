"""Typed settings. Nothing else in Waypoint reads ``os.environ``.

Every service has one settings class built on ``CommonSettings``. The infrastructure variables
(``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``) keep their conventional unprefixed names; the
rest use ``WAYPOINT_`` (common) or ``WAYPOINT_<SERVICE>_`` (service specific).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events.identifiers import DEFAULT_PHONE_REGION, normalize_region


class Environment(StrEnum):
    dev = "dev"
    test = "test"
    prod = "prod"


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAYPOINT_", extra="ignore", populate_by_name=True)

    env: Environment = Field(
        Environment.dev,
        validation_alias=_alias("WAYPOINT_ENV"),
        description="dev, test or prod (prod refuses the embedded stack and placeholder keys).",
    )
    database_url: str | None = Field(
        None,
        validation_alias=_alias("DATABASE_URL", "WAYPOINT_DATABASE_URL"),
        description="PostgreSQL URL; unset means the embedded PostgreSQL.",
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=_alias("KAFKA_BOOTSTRAP_SERVERS", "WAYPOINT_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means the embedded broker.",
    )
    data_dir: Path = Field(
        Path(".waypoint"),
        validation_alias=_alias("WAYPOINT_DATA_DIR"),
        description="Embedded PostgreSQL data, broker log and the development key (`make run`).",
    )
    log_level: str = Field(
        "INFO", validation_alias=_alias("WAYPOINT_LOG_LEVEL"), description="Log level."
    )
    log_json: bool = Field(
        True,
        validation_alias=_alias("WAYPOINT_LOG_JSON"),
        description="One JSON object per log line (false: readable console lines).",
    )

    topic_raw: str = Field(
        "waypoint.events.raw",
        validation_alias=_alias("WAYPOINT_TOPIC_RAW"),
        description="Incoming CloudEvents (from channel systems and the HTTP API).",
    )
    topic_normalized: str = Field(
        "waypoint.events.normalized",
        validation_alias=_alias("WAYPOINT_TOPIC_NORMALIZED"),
        description="Validated, normalized events (ingest → journey).",
    )
    topic_dead_letter: str = Field(
        "waypoint.events.deadletter",
        validation_alias=_alias("WAYPOINT_TOPIC_DEAD_LETTER"),
        description="Rejected events, with the reason in headers.",
    )
    topic_activity: str = Field(
        "waypoint.customer.activity",
        validation_alias=_alias("WAYPOINT_TOPIC_ACTIVITY"),
        description="Resolved customer activity (journey → alerts).",
    )
    topic_engagement: str = Field(
        "waypoint.customer.engagement",
        validation_alias=_alias("WAYPOINT_TOPIC_ENGAGEMENT"),
        description="Engagement score and churn-alert changes (alerts → journey).",
    )
    topic_partitions: int = Field(
        8,
        validation_alias=_alias("WAYPOINT_TOPIC_PARTITIONS"),
        description="Partitions of topics Waypoint creates (the most useful workers per service).",
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        validation_alias=_alias("WAYPOINT_TOPIC_REPLICATION_FACTOR"),
        description="Replicas of topics Waypoint creates (3 on a production cluster).",
    )

    db_pool_size: int = Field(
        10,
        validation_alias=_alias("WAYPOINT_DB_POOL_SIZE"),
        description="PostgreSQL connections per process.",
    )
    api_key_cache_seconds: float = Field(
        30.0,
        validation_alias=_alias("WAYPOINT_API_KEY_CACHE_SECONDS"),
        description="How long a verified API key is cached (revocation delay).",
    )
    default_tenant: str = Field(
        "default",
        validation_alias=_alias("WAYPOINT_DEFAULT_TENANT"),
        description="Tenant of the bootstrap / development key and of the demo.",
    )
    phone_region: str = Field(
        DEFAULT_PHONE_REGION,
        # WAYPOINT_INGEST_PHONE_REGION: its name before every service read it (deprecated).
        validation_alias=_alias("WAYPOINT_PHONE_REGION", "WAYPOINT_INGEST_PHONE_REGION"),
        description="Country of phone numbers written without a +country code (US, RU, CN, …), "
        "for events and look-ups alike; a tenant's own phone region overrides it.",
    )
    bootstrap_api_key: str | None = Field(
        None,
        validation_alias=_alias("WAYPOINT_BOOTSTRAP_API_KEY"),
        description="Ensured at start-up as an admin key of the default tenant, every scope.",
    )
    web_session_hours: float = Field(
        12.0,
        gt=0,
        validation_alias=_alias("WAYPOINT_WEB_SESSION_HOURS"),
        description="A page session (after signing in with a key) ends this long after sign-in.",
    )
    web_session_idle_minutes: float = Field(
        120.0,
        gt=0,
        validation_alias=_alias("WAYPOINT_WEB_SESSION_IDLE_MINUTES"),
        description="A page session unused for this long ends (an open agent page keeps it).",
    )
    web_cookie_samesite: Literal["strict", "lax", "none"] = Field(
        "strict",
        validation_alias=_alias("WAYPOINT_WEB_COOKIE_SAMESITE"),
        description="SameSite of the session cookie; `none` (always Secure) only for a "
        "cross-site iframe, see docs/pages.md.",
    )
    web_frame_ancestors: str = Field(
        "'none'",
        validation_alias=_alias("WAYPOINT_WEB_FRAME_ANCESTORS"),
        description="CSP frame-ancestors of the pages: 'none', or the CTI/softphone origins "
        "that may embed them (space separated).",
    )
    web_service_urls: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_alias("WAYPOINT_WEB_SERVICE_URLS"),
        description="Where each service's pages are reached, for links between them (JSON, e.g. "
        '{"alerts": "https://cx.example.com"}); unset: same host, the service\'s port.',
    )

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return normalize_region(value)

    @model_validator(mode="after")
    def _refuse_embedded_in_prod(self) -> CommonSettings:
        if self.env is Environment.prod and (
            not self.database_url or not self.kafka_bootstrap_servers
        ):
            raise ValueError(
                "WAYPOINT_ENV=prod needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS; "
                "the embedded PostgreSQL and broker are for development only"
            )
        if self.env is Environment.prod and self.bootstrap_api_key is not None:
            if len(self.bootstrap_api_key) < 32 or self.bootstrap_api_key.startswith("wp_dev"):
                raise ValueError(
                    "WAYPOINT_BOOTSTRAP_API_KEY is a placeholder; use `waypoint keys generate`"
                )
        return self

    @property
    def bootstrap_servers(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set and no embedded broker runs")
        return self.kafka_bootstrap_servers

    @property
    def dsn(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set and no embedded PostgreSQL runs")
        return self.database_url
