"""Ingest metrics, defined once. Labels are bounded: channel (an enum), reason (an enum), path."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_RECEIVED = Counter(
    "waypoint_ingest_events_received_total",
    "Records read from the raw topic, by channel (unknown when the record was refused).",
    ["channel"],
)
EVENTS_STORED = Counter(
    "waypoint_ingest_events_stored_total",
    "Events stored for the first time in the event store.",
    ["channel"],
)
EVENTS_DUPLICATE = Counter(
    "waypoint_ingest_events_duplicate_total",
    "Events already stored (redelivery, replay or a sender's retry); not stored again.",
    ["channel"],
)
EVENTS_DEAD_LETTERED = Counter(
    "waypoint_ingest_events_dead_lettered_total",
    "Records refused and sent to the dead-letter topic, by reason.",
    ["reason"],
)
EVENTS_PUBLISHED = Counter(
    "waypoint_ingest_events_published_total",
    "Normalized events produced to the normalized topic (at least once per stored event).",
)
HTTP_EVENTS = Counter(
    "waypoint_ingest_http_events_total",
    "Events received over HTTP, by API (cloudevents or segment) and outcome.",
    ["api", "outcome"],
)
STORE_SECONDS = Histogram(
    "waypoint_ingest_store_duration_seconds",
    "Time to store one batch in PostgreSQL (COPY + insert, one transaction).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_SECONDS = Histogram(
    "waypoint_ingest_publish_duration_seconds",
    "Time to produce one batch to the normalized and dead-letter topics (acks=all).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
