"""Typed settings. Nothing else in Waypoint reads ``os.environ``.

Every service has one settings class built on ``CommonSettings``. The infrastructure variables
(``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``) keep their conventional unprefixed names; the
rest use ``WAYPOINT_`` (common) or ``WAYPOINT_<SERVICE>_`` (service specific).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events.identifiers import DEFAULT_PHONE_REGION, normalize_region
from shared.privacy.crypto import DEV_ENCRYPTION_KEYS, parse_keys


class Environment(StrEnum):
    dev = "dev"
    test = "test"
    prod = "prod"


class BrokerStorage(StrEnum):
    """Where the embedded broker keeps topics and committed offsets."""

    s3 = "s3"  # durable: SeaweedFS's S3 gateway, files under the data folder
    memory = "memory"  # lost when the broker stops (faster to start; the test suite's)


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _setting(env: str, default: Any, description: str, **constraints: Any) -> Any:
    """A common setting, read from ``env`` by every service whatever its own prefix (its
    ``validation_alias``); ``constraints`` are ``Field``'s (``ge``, ``gt``, ``le``)."""
    return Field(default, validation_alias=_alias(env), description=description, **constraints)


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
        description="Embedded PostgreSQL and broker data, logs, the development key and "
        "stack.json (how the CLI finds `make run`).",
    )
    broker_storage: BrokerStorage = Field(
        BrokerStorage.s3,
        validation_alias=_alias("WAYPOINT_BROKER_STORAGE"),
        description="Embedded broker's storage: s3 (durable, in the data folder) or memory.",
    )
    run_max_restarts: int = Field(
        5,
        ge=0,
        validation_alias=_alias("WAYPOINT_RUN_MAX_RESTARTS"),
        description="`waypoint run` restarts a crashed process this many times per window, "
        "then stops everything.",
    )
    run_restart_window_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias=_alias("WAYPOINT_RUN_RESTART_WINDOW_SECONDS"),
        description="The window in which crashes are counted (see WAYPOINT_RUN_MAX_RESTARTS).",
    )
    run_drain_timeout_seconds: float = Field(
        60.0,
        ge=0,
        validation_alias=_alias("WAYPOINT_RUN_DRAIN_TIMEOUT_SECONDS"),
        description="On Ctrl-C, how long `waypoint run` waits for the workers to consume what "
        "the APIs accepted before stopping them.",
    )
    fault_crash_at: str | None = Field(
        None,
        validation_alias=_alias("WAYPOINT_FAULT_CRASH_AT"),
        description="Fault suite only: `stage:point:n` makes a worker process (or `waypoint "
        "serve`, one process) SIGKILL itself the n-th time it reaches that point "
        "(shared/faults.py); refused in prod.",
    )
    log_level: str = Field(
        "INFO", validation_alias=_alias("WAYPOINT_LOG_LEVEL"), description="Log level."
    )
    log_json: bool = Field(
        True,
        validation_alias=_alias("WAYPOINT_LOG_JSON"),
        description="One JSON object per log line (false: readable console lines).",
    )

    topic_raw: str = _setting(
        "WAYPOINT_TOPIC_RAW",
        "waypoint.events.raw",
        "Incoming CloudEvents (from channel systems and the HTTP API).",
    )
    topic_normalized: str = _setting(
        "WAYPOINT_TOPIC_NORMALIZED",
        "waypoint.events.normalized",
        "Validated, normalized events (ingest → journey).",
    )
    topic_dead_letter: str = _setting(
        "WAYPOINT_TOPIC_DEAD_LETTER",
        "waypoint.events.deadletter",
        "Rejected events, with the reason in headers.",
    )
    topic_activity: str = _setting(
        "WAYPOINT_TOPIC_ACTIVITY",
        "waypoint.customer.activity",
        "Resolved customer activity (journey → alerts).",
    )
    topic_engagement: str = _setting(
        "WAYPOINT_TOPIC_ENGAGEMENT",
        "waypoint.customer.engagement",
        "Engagement score and churn-alert changes (alerts → journey).",
    )
    topic_privacy: str = _setting(
        "WAYPOINT_TOPIC_PRIVACY",
        "waypoint.privacy.erasure",
        "Erasure commands (journey's API → every service, applied idempotently).",
    )
    topic_partitions: int = _setting(
        "WAYPOINT_TOPIC_PARTITIONS",
        8,
        "Partitions of topics Waypoint creates (the most useful workers per service).",
    )
    topic_replication_factor: int = _setting(
        "WAYPOINT_TOPIC_REPLICATION_FACTOR",
        1,
        "Replicas of topics Waypoint creates (3 on a production cluster).",
        ge=1,
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

    # Abuse limits (docs/security.md). Counts are per window and shared by every API process
    # through the counter store: PostgreSQL, or Redis when WAYPOINT_REDIS_URL is set.
    redis_url: str | None = Field(
        None,
        validation_alias=_alias("WAYPOINT_REDIS_URL"),
        description="Redis for the rate-limit counters (unset: a PostgreSQL table).",
    )
    rate_limit_enabled: bool = _setting(
        "WAYPOINT_RATE_LIMIT_ENABLED",
        True,
        "Per key, per tenant and failed-authentication limits (429 when exceeded).",
    )
    rate_limit_window_seconds: int = _setting(
        "WAYPOINT_RATE_LIMIT_WINDOW_SECONDS",
        60,
        "Window of every rate limit (a sliding window over two fixed ones).",
        ge=1,
        le=3600,
    )
    rate_limit_key_reads: int = _setting(
        "WAYPOINT_RATE_LIMIT_KEY_READS",
        60_000,
        "Reads (GET) per API key per window; 0: unlimited.",
        ge=0,
    )
    rate_limit_key_writes: int = _setting(
        "WAYPOINT_RATE_LIMIT_KEY_WRITES",
        30_000,
        "Writes (POST, PUT, PATCH, DELETE) per API key per window; 0: unlimited.",
        ge=0,
    )
    rate_limit_tenant_reads: int = _setting(
        "WAYPOINT_RATE_LIMIT_TENANT_READS",
        240_000,
        "Reads per tenant (all its keys) per window; 0: unlimited.",
        ge=0,
    )
    rate_limit_tenant_writes: int = _setting(
        "WAYPOINT_RATE_LIMIT_TENANT_WRITES",
        120_000,
        "Writes per tenant (all its keys) per window; 0: unlimited.",
        ge=0,
    )
    rate_limit_auth_failures: int = _setting(
        "WAYPOINT_RATE_LIMIT_AUTH_FAILURES",
        60,
        "Failed authentications per client IP per window, then 429 without a "
        "key look-up (known good keys from that IP keep working); 0: unlimited.",
        ge=0,
    )
    rate_limit_sync_seconds: float = _setting(
        "WAYPOINT_RATE_LIMIT_SYNC_SECONDS",
        0.5,
        "How often each process adds its counts to the shared store (sooner near "
        "a limit); processes can overshoot a limit by what they counted in between.",
        gt=0,
        le=60,
    )
    sse_streams_per_key: int = _setting(
        "WAYPOINT_SSE_STREAMS_PER_KEY",
        50,
        "Open live streams per API key in one API process; 0: unlimited.",
        ge=0,
    )
    api_key_rejected_cache_size: int = Field(
        10_000,
        ge=0,
        validation_alias=_alias("WAYPOINT_API_KEY_REJECTED_CACHE_SIZE"),
        description="Unknown keys remembered (LRU, apart from valid keys: junk never evicts them).",
    )
    api_key_rejected_cache_seconds: float = Field(
        60.0,
        ge=0,
        validation_alias=_alias("WAYPOINT_API_KEY_REJECTED_CACHE_SECONDS"),
        description="How long an unknown key is answered 401 without a database look-up.",
    )
    api_key_last_used_seconds: float = Field(
        60.0,
        gt=0,
        validation_alias=_alias("WAYPOINT_API_KEY_LAST_USED_SECONDS"),
        description="A key's last_used_at is written at most this often (not per request).",
    )
    egress_allow: str = Field(
        "",
        validation_alias=_alias("WAYPOINT_EGRESS_ALLOW"),
        description="Private destinations webhooks and Slack may reach anyway: "
        "comma-separated CIDRs or hosts, each optionally :port (10.0.0.0/8, "
        "hooks.internal:443, [fd00::1]:8080). Everything else non-public is refused.",
    )
    encryption_keys: str | None = Field(
        None,
        validation_alias=_alias("WAYPOINT_ENCRYPTION_KEYS"),
        description="Key-encryption keys of sensitive values at rest, `id:base64` (32 bytes) "
        "comma-separated: new data keys use the first, any listed one opens "
        "(`waypoint keys generate-encryption`, `waypoint keys rotate-encryption`); "
        "unset: a development key, refused in prod.",
    )

    # Retention (docs/security.md#retention): days kept, per tenant overridable; 0 keeps forever.
    retention_raw_events_days: int = _setting(
        "WAYPOINT_RETENTION_RAW_EVENTS_DAYS",
        365,
        "Days ingest keeps stored events (by event time); 0: forever. A tenant's "
        "own setting (`waypoint tenants set-retention`) overrides it.",
        ge=0,
    )
    retention_dead_letters_days: int = _setting(
        "WAYPOINT_RETENTION_DEAD_LETTERS_DAYS",
        30,
        "Days ingest keeps dead letters; 0: forever.",
        ge=0,
    )
    retention_timelines_days: int = _setting(
        "WAYPOINT_RETENTION_TIMELINES_DAYS",
        365,
        "Days journey keeps a customer's events (the timeline) by event time; 0: "
        "forever. Context summaries and the journey map outlive them.",
        ge=0,
    )
    retention_delivery_logs_days: int = _setting(
        "WAYPOINT_RETENTION_DELIVERY_LOGS_DAYS",
        90,
        "Days alerts keeps notification delivery logs; 0: forever.",
        ge=0,
    )
    retention_interval_seconds: float = _setting(
        "WAYPOINT_RETENTION_INTERVAL_SECONDS",
        3600.0,
        "How often each service's privacy process purges what is past retention.",
        gt=0,
    )
    retention_batch_rows: int = _setting(
        "WAYPOINT_RETENTION_BATCH_ROWS",
        1000,
        "Rows deleted per purge transaction (short ones: no long lock).",
        ge=1,
        le=100_000,
    )

    @field_validator("encryption_keys")
    @classmethod
    def _valid_encryption_keys(cls, value: str | None) -> str | None:
        if value is not None:
            parse_keys(value)
        return value

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return normalize_region(value)

    @model_validator(mode="after")
    def _fault_points_only_outside_prod(self) -> CommonSettings:
        if self.fault_crash_at:
            if self.env is Environment.prod:
                raise ValueError("WAYPOINT_FAULT_CRASH_AT is for the fault suite, never prod")
            from shared.faults import CrashAt

            CrashAt.parse(self.fault_crash_at)
        return self

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
        if self.env is Environment.prod and DEV_ENCRYPTION_KEYS in self.sealing_keys:
            raise ValueError(
                "WAYPOINT_ENV=prod needs WAYPOINT_ENCRYPTION_KEYS without the development key; "
                "make one with `waypoint keys generate-encryption`"
            )
        return self

    @property
    def sealing_keys(self) -> str:
        """WAYPOINT_ENCRYPTION_KEYS, or the development key when it is unset."""
        return self.encryption_keys or DEV_ENCRYPTION_KEYS

    @property
    def bootstrap_servers(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise InfrastructureMissing(
                "no broker: KAFKA_BOOTSTRAP_SERVERS is not set and no `waypoint run` stack "
                f"was found in {self.data_dir}; start one with `make run`, or set it"
            )
        return self.kafka_bootstrap_servers

    @property
    def dsn(self) -> str:
        if not self.database_url:
            raise InfrastructureMissing(
                "no PostgreSQL: DATABASE_URL is not set and no `waypoint run` stack was found "
                f"in {self.data_dir}; start one with `make run`, or set it"
            )
        return self.database_url


class InfrastructureMissing(RuntimeError):
    """Neither the environment nor a running ``waypoint run`` names a PostgreSQL or broker."""
