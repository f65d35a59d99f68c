"""Settings of the journey service (env prefix ``WAYPOINT_JOURNEY_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class JourneySettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="WAYPOINT_JOURNEY_", extra="ignore", populate_by_name=True
    )

    consumer_group: str = Field(
        "waypoint-journey", description="Kafka consumer group of the worker."
    )
    chunk_size: int = Field(
        500, ge=1, le=5000, description="Events applied per database transaction."
    )
    max_retries: int = Field(5, ge=0, description="Retries of a chunk on deadlock/serialization.")
    share_limit_default: int = Field(
        3,
        ge=2,
        description="An identifier held by this many customers is 'shared' and never links.",
    )
    share_limits: dict[str, int] = Field(
        default_factory=lambda: {"device_id": 5, "anonymous_id": 2, "chat_session": 2},
        description="Per identifier type overrides of share_limit_default (JSON).",
    )
    skip_ivr_hours: float = Field(
        24.0, gt=0, description="Skip the IVR when an open case was touched within this window."
    )
    preferred_agent_hours: float = Field(
        72.0, gt=0, description="Prefer the last agent when the last interaction is this recent."
    )
    # 20 MB keeps an API process under 150 MB: the cache counts its documents' and cards'
    # payload bytes, the process holds ~1.15x that plus its notice log (up to ~13 MB), on a
    # ~112 MB base (docs/benchmarks.md "Memory"). More memory buys more repeat-pop hits.
    context_cache_mb: int = Field(
        20,
        ge=0,
        description="Per API process cache of context documents and rendered cards, invalidated "
        "by NOTIFY (0: off); about 2,400 customers with their cards, each process uses "
        "~1.15x this plus up to 13 MB of notice log.",
    )
    context_lookup_batch_max: int = Field(
        64,
        ge=0,
        le=1000,
        description="Identifier look-ups of concurrent screen pops (and route hints) sent as one "
        "statement, at most this many (0: one statement each); a lone look-up is sent at once.",
    )
    timeline_page_max: int = Field(200, ge=1)
    outbox_lanes: int = Field(
        64,
        ge=1,
        le=1024,
        description="Ordering lanes of the outbox (a hash of the message key); change it only "
        "while the outbox is empty.",
    )
    outbox_batch_size: int = Field(
        1000, ge=1, le=10_000, description="Messages the outbox relay publishes per round."
    )
    outbox_publish_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long the outbox relay waits for the broker's acknowledgement of a "
        "round before it leaves the messages pending and retries with backoff.",
    )
    outbox_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often an idle outbox relay looks for messages (NOTIFY wakes it sooner).",
    )
    outbox_channel: str = Field(
        "waypoint_journey_outbox", description="LISTEN/NOTIFY channel that wakes the relays."
    )
    idempotency_key_hours: float = Field(
        24.0,
        gt=0,
        description="How long a command's Idempotency-Key (and its response) is kept.",
    )
    engagement_consumer_group: str = Field(
        "waypoint-journey-engagement",
        description="Kafka consumer group of the engagement consumer (alerts → the context).",
    )
    engagement_unknown_retries: int = Field(
        5,
        ge=0,
        description="Retries (0.2 s apart) of an engagement change whose customer journey has "
        "not stored yet, before it is counted and dropped.",
    )
    notify_channel: str = Field("waypoint_journey_context", description="LISTEN/NOTIFY channel.")
    session_timeout_ms: int = Field(10_000, ge=1_000)
    batch_size: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Most records handled per batch (bounds the worker's memory: under a "
        "100k-event backlog 5,000 peaked at 170 MB, 500 at 145 MB, same CPU per event).",
    )
    fetch_max_wait_ms: int = Field(
        20,
        ge=1,
        description="Longest a fetch waits for new records: bounds freshness on a quiet topic "
        "where the broker holds a fetch (the embedded Tansu answers after about half of it; "
        "Kafka at the first record, so there it only sets how often an idle consumer asks).",
    )

    map_maintenance: bool = Field(
        True,
        description=(
            "Keep the journey map current: the worker queues each applied event for the map's "
            "compactor (`waypoint worker journey maps`) to fold in (off: run "
            "`waypoint rebuild-maps` after turning it on again)."
        ),
    )
    map_compactor_in_worker: bool = Field(
        False,
        description=(
            "Also fold the map inside every journey worker process, as before the compactor "
            "had a process of its own: for a deployment that runs no `journey maps` process. "
            "Safe beside it (compactors skip each other's customers), but it costs the worker "
            "about a fifth of its CPU."
        ),
    )
    map_batch_customers: int = Field(
        2_000,
        ge=1,
        le=20_000,
        description=(
            "Most customers folded into the map per transaction (a batch takes the settled ones "
            "waiting, up to this). A batch's aggregate changes coalesce before they are written "
            "once: 2,000 cost 15-19 % less CPU per event than 500 (docs/benchmarks.md, map "
            "maintenance). Memory is bounded by `map_batch_steps`, not by this."
        ),
    )
    map_batch_steps: int = Field(
        5_000,
        ge=1,
        le=10_000_000,
        description=(
            "Most stored steps plus queued events in one part of a map batch: its customers "
            "are read and folded in parts of at most this many (a customer with more is a part "
            "alone), each part's own rows written while the next is folded (two parts in memory "
            "at once), the aggregate changes of the whole batch written once at the end. At "
            "2,000 customers and 5,000 the maps process peaked at 125-126 MB live and 150-153 "
            "MB replaying months of history."
        ),
    )
    map_poll_seconds: float = Field(
        0.2, gt=0, le=60, description="How often an idle map compactor looks for new work."
    )
    map_batch_interval_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "While the map compactor keeps up (its last batch took fewer customers than "
            "`map_batch_customers`), the least time from one batch's start to the next: the "
            "next gathers what arrived meanwhile, and a batch's aggregate writes coalesce "
            "across its customers (fewer, fuller batches write fewer rows per event). After a "
            "full batch (a backlog) the next starts at once. 0: batch after batch."
        ),
    )
    map_settle_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description=(
            "The map compactor folds a customer once its newest queued event is this old, so "
            "a burst of the customer's events is derived once, not once per event (0: at once)."
        ),
    )
    map_settle_cap_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description=(
            "The map compactor also folds a customer whose oldest queued event has waited this "
            "long, so one whose events never pause is still folded (the longest a new step waits "
            "for the map while the compactor keeps up)."
        ),
    )
    map_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "CPU priority the `journey maps` process lowers itself by (`nice`; 0: none): on a "
            "saturated host the worker and the API go first and the map catches up when CPU "
            "is free (its lag is `waypoint_journey_map_lag_seconds`)."
        ),
    )

    def share_limit(self, id_type: str) -> int:
        return self.share_limits.get(id_type, self.share_limit_default)
