"""Journey map metrics, defined once (``waypoint_`` prefix, bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MAP_LAG = Gauge(
    "waypoint_journey_map_lag_seconds",
    "Age of the oldest applied event not yet folded into the journey map (0: the map is current).",
)
MAP_DELAY = Histogram(
    "waypoint_journey_map_delay_seconds",
    "Per compaction, the wait of its oldest event: from the worker's commit to the map's.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
MAP_CUSTOMERS = Counter(
    "waypoint_journey_map_customers_total",
    "Customers whose queued events were folded, by path (incremental, rederived, removed; "
    "unchanged: their events changed no step and not the profile, nothing was rewritten).",
    ["path"],
)
MAP_EVENTS = Counter(
    "waypoint_journey_map_events_total",
    "Pending events folded into steps (folded) or left to a re-derivation (superseded).",
    ["result"],
)
MAP_BATCH = Histogram(
    "waypoint_journey_map_batch_duration_seconds",
    "Time of one map compaction transaction (claim, load, derive, write, commit), less its "
    "wait for the batch before it to commit (while backlogged, batches overlap).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MAP_PARTS = Histogram(
    "waypoint_journey_map_batch_parts",
    "Per map compaction, the parts its customers were read and folded in (each at most "
    "WAYPOINT_JOURNEY_MAP_BATCH_STEPS stored steps plus queued events; more parts: longer "
    "histories or bigger bursts per batch).",
    buckets=(1, 2, 3, 5, 10, 20, 50),
)
MAP_ROWS = Counter(
    "waypoint_journey_map_aggregate_writes_total",
    "Aggregate rows written by map maintenance, by operation (upserted, deleted).",
    ["op"],
)
MAP_AGGREGATE_ROWS = Gauge(
    "waypoint_journey_map_aggregate_rows",
    "Estimated rows in the map's aggregate tables (PostgreSQL statistics), by table.",
    ["table"],
)
MAP_FAILURES = Counter(
    "waypoint_journey_map_failures_total",
    "Map compaction transactions that failed and will be retried, by cause.",
    ["cause"],
)
MAP_REBUILDS = Counter(
    "waypoint_journey_map_rebuilds_total",
    "Recomputations of a tenant's whole map, by trigger (command, config).",
    ["trigger"],
)
