"""Privacy metrics (bounded labels: service, table; never a tenant or customer)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ERASURES_APPLIED = Counter(
    "waypoint_erasures_applied_total", "Erasure commands applied, by service.", ["service"]
)
ERASURE_SECONDS = Histogram(
    "waypoint_erasure_seconds", "Time to apply one erasure command, by service.", ["service"]
)
ERASED_DROPPED = Counter(
    "waypoint_erased_events_dropped_total",
    "Events dropped because they carry an erased identifier (later, replayed, redriven).",
    ["service"],
)
RETENTION_PURGED = Counter(
    "waypoint_retention_purged_rows_total", "Rows purged by retention, by table.", ["table"]
)
RETENTION_SECONDS = Histogram(
    "waypoint_retention_purge_seconds", "Duration of one retention run, by service.", ["service"]
)
RETENTION_FAILURES = Counter(
    "waypoint_retention_failures_total",
    "Retention runs that failed (retried next time).",
    ["service"],
)
