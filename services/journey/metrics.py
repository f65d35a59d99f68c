"""Journey metrics, defined once (``waypoint_`` prefix, bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RESOLUTIONS = Counter(
    "waypoint_journey_resolutions_total",
    "Identity resolution outcomes of applied events, by outcome and deciding rule.",
    ["outcome", "rule"],
)
MERGES = Counter(
    "waypoint_journey_merges_total", "Customer merges, by rule (manual included).", ["rule"]
)
SPLITS = Counter("waypoint_journey_splits_total", "Merges undone by a split.")
EVENTS = Counter(
    "waypoint_journey_events_total",
    "Events consumed by the journey worker, by result (applied, duplicate, dead_lettered).",
    ["result"],
)
CHUNK_RETRIES = Counter(
    "waypoint_journey_chunk_retries_total",
    "Chunks retried after a deadlock, serialization failure or a concurrent merge.",
    ["cause"],
)
PROCESSING = Histogram(
    "waypoint_journey_chunk_duration_seconds",
    "Time to apply one chunk of events in one transaction (resolve, store, fold, publish).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FRESHNESS = Histogram(
    "waypoint_journey_freshness_seconds",
    "From the event's arrival on the normalized topic (record timestamp) to its context commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOOKUPS = Counter(
    "waypoint_journey_lookups_total",
    "Context look-ups by kind (context, route_hint, customer) and result (hit, miss).",
    ["kind", "result"],
)
LOOKUP_LATENCY = Histogram(
    "waypoint_journey_lookup_duration_seconds",
    "Database time of a context look-up, by kind.",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
LOOKUP_BATCH = Histogram(
    "waypoint_journey_lookup_batch_keys",
    "Identifier look-ups answered by one statement (concurrent screen pops share one; "
    "WAYPOINT_JOURNEY_CONTEXT_LOOKUP_BATCH_MAX caps it).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ENGAGEMENT = Counter(
    "waypoint_journey_engagement_total",
    "Engagement changes consumed from alerts, by result (applied; stale: an equal or newer "
    "version was already folded; merged_away: the customer was merged into another; "
    "unknown_customer; dead_lettered).",
    ["result"],
)
