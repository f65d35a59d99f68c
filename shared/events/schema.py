"""The published JSON Schema of the event contract, generated from the pydantic models.

``waypoint schema`` rewrites the shipped file; a test fails when it is out of date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from shared.events.envelope import EVENT_ADAPTER, SCHEMA_VERSION

SCHEMA_PATH = Path(__file__).with_name(f"waypoint-event-v{SCHEMA_VERSION}.schema.json")
SCHEMA_ID = f"https://waypoint.dev/schemas/waypoint-event-v{SCHEMA_VERSION}.schema.json"


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one Waypoint event, as validated on ingest."""
    schema = EVENT_ADAPTER.json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"Waypoint event (CloudEvents 1.0, schema version {SCHEMA_VERSION})",
        "description": (
            "One customer-journey event. Identifier values are normalized on ingest "
            "(phones to E.164, e-mails lower-cased, all trimmed); times are stored in UTC."
        ),
        **schema,
    }


def render_schema() -> bytes:
    return (
        orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def write_schema(path: Path = SCHEMA_PATH) -> bool:
    """Write the schema file; True when it changed."""
    rendered = render_schema()
    if path.exists() and path.read_bytes() == rendered:
        return False
    path.write_bytes(rendered)
    return True
