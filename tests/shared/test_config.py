"""Common settings keep their ``WAYPOINT_`` names in every service, whatever its own prefix,
and refuse values out of their bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.alerts.config import AlertsSettings
from shared.config import CommonSettings


@pytest.mark.parametrize(
    ("env", "field", "value", "expected"),
    [
        ("WAYPOINT_TOPIC_RAW", "topic_raw", "raw-x", "raw-x"),
        ("WAYPOINT_TOPIC_PARTITIONS", "topic_partitions", "3", 3),
        ("WAYPOINT_RATE_LIMIT_KEY_READS", "rate_limit_key_reads", "0", 0),
        ("WAYPOINT_SSE_STREAMS_PER_KEY", "sse_streams_per_key", "7", 7),
        ("WAYPOINT_RETENTION_TIMELINES_DAYS", "retention_timelines_days", "0", 0),
        ("WAYPOINT_RETENTION_BATCH_ROWS", "retention_batch_rows", "5", 5),
    ],
)
def test_a_common_setting_is_read_by_its_waypoint_name_in_a_prefixed_service(
    monkeypatch: pytest.MonkeyPatch, env: str, field: str, value: str, expected: object
):
    monkeypatch.setenv(env, value)
    monkeypatch.setenv(f"WAYPOINT_ALERTS_{field.upper()}", "ignored")
    assert getattr(AlertsSettings(), field) == expected
    assert getattr(CommonSettings(), field) == expected


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("WAYPOINT_TOPIC_REPLICATION_FACTOR", "0"),
        ("WAYPOINT_RATE_LIMIT_WINDOW_SECONDS", "3601"),
        ("WAYPOINT_RATE_LIMIT_TENANT_WRITES", "-1"),
        ("WAYPOINT_RATE_LIMIT_SYNC_SECONDS", "0"),
        ("WAYPOINT_RETENTION_RAW_EVENTS_DAYS", "-1"),
        ("WAYPOINT_RETENTION_BATCH_ROWS", "100001"),
    ],
)
def test_a_common_setting_out_of_its_bounds_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=env):
        CommonSettings()
