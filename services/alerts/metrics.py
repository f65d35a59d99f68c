"""The alerts service's metrics (bounded labels: rule, channel type, outcome)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVITIES = Counter(
    "waypoint_alerts_activities_total",
    "Customer activities consumed, by outcome (applied, duplicate, dead_lettered).",
    ["outcome"],
)
ALERTS_OPENED = Counter("waypoint_alerts_opened_total", "Alerts opened, by rule.", ["rule"])
ALERTS_RESOLVED = Counter(
    "waypoint_alerts_resolved_total",
    "Alerts resolved, by rule and how (recovered, manual, merged, churned).",
    ["rule", "resolution"],
)
DELIVERIES = Counter(
    "waypoint_alerts_deliveries_total",
    "Delivery attempts, by channel type and outcome (delivered, retry, failed, cancelled).",
    ["channel", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "waypoint_alerts_delivery_latency_seconds",
    "From an alert being opened to a channel accepting it.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
OUTBOX_BACKLOG = Gauge(
    "waypoint_alerts_outbox_backlog", "Outbox rows waiting for delivery (all tenants)."
)
RESCORE_DURATION = Histogram(
    "waypoint_alerts_rescore_duration_seconds",
    "Duration of one decay-rescoring pass.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RESCORED = Counter("waypoint_alerts_rescored_total", "Customers rescored by the decay scheduler.")
ENGAGEMENT_PUBLISHED = Counter(
    "waypoint_alerts_engagement_published_total",
    "Engagement changes published to the engagement topic (a retry may publish one again).",
)
ENGAGEMENT_PUBLISH_FAILURES = Counter(
    "waypoint_alerts_engagement_publish_failures_total",
    "Relay rounds that failed (broker or database down, or a bug); the changes stay pending.",
)
ENGAGEMENT_BACKLOG = Gauge(
    "waypoint_alerts_engagement_backlog", "Engagement changes committed but not yet published."
)
ENGAGEMENT_DELAY = Histogram(
    "waypoint_alerts_engagement_publish_delay_seconds",
    "From an engagement change being committed to the broker acknowledging it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
