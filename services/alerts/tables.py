"""The ``alerts`` schema. Its tables are created by plain SQL DDL in
``migrations/versions/2026_11_22_alerts_initial.py`` and queried with SQL: the hot paths (the
activity consumer, the decay scheduler, the notifier) use asyncpg directly, so there are no ORM
models to keep in step with the DDL."""

from __future__ import annotations

from shared.db import schema_metadata

SCHEMA = "alerts"
metadata = schema_metadata(SCHEMA)
OUTBOX_CHANNEL = "waypoint_alerts_outbox"  # LISTEN/NOTIFY channel that wakes notifiers
ENGAGEMENT_CHANNEL = "waypoint_alerts_engagement"  # wakes the engagement relay
