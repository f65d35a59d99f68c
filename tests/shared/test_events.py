"""The event contract: normalization rules, rejection reasons, the published JSON Schema."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.events import (
    EventRejected,
    IdentifierType,
    InvalidIdentifier,
    RejectReason,
    is_junk_value,
    normalize_identifier,
    parse_normalized,
    validate_event,
)
from shared.events.schema import SCHEMA_PATH, render_schema
from tests.support import cloud_event


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0123", "US", "+14155550123"),
        ("+1 415.555.0123", "US", "+14155550123"),
        ("030 1234567", "DE", "+49301234567"),
        ("+49 30 1234567", "US", "+49301234567"),
        ("  +44 20 7946 0958 ", "US", "+442079460958"),
    ],
)
def test_phones_become_e164(raw, region, expected):
    assert normalize_identifier(IdentifierType.phone, raw, default_region=region) == expected


def test_emails_are_lower_cased_and_trimmed():
    assert normalize_identifier(IdentifierType.email, "  Ann.Lee@Example.COM ") == (
        "ann.lee@example.com"
    )
    assert normalize_identifier(IdentifierType.email, "mailto:X@Y.io") == "x@y.io"
    with pytest.raises(InvalidIdentifier):
        normalize_identifier(IdentifierType.email, "not-an-email")


def test_social_handles_fold_case_and_other_ids_are_trimmed():
    assert normalize_identifier(IdentifierType.social, " Twitter:@Alice ") == "twitter:@alice"
    assert normalize_identifier(IdentifierType.crm_id, "  CRM-0042 ") == "CRM-0042"
    with pytest.raises(InvalidIdentifier):
        normalize_identifier(IdentifierType.crm_id, "   ")


@pytest.mark.parametrize("value", ["anonymous", "0000000000", "+1 111 111 1111", "1234567890"])
def test_junk_phones_are_flagged(value):
    assert is_junk_value(IdentifierType.phone, value)


@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True), st.sampled_from(["", " "]))
def test_us_phone_formats_agree(digits, pad):
    """However a US number is written, it normalizes to one E.164 value (or is refused)."""
    assume(not is_junk_value(IdentifierType.phone, digits))  # kept as typed, never linked
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    spellings = [digits, f"({area}) {exchange}-{line}", f"+1 {area} {exchange} {line}"]
    results = set()
    for spelling in spellings:
        try:
            results.add(normalize_identifier(IdentifierType.phone, pad + spelling + pad))
        except InvalidIdentifier:
            results.add("invalid")
    assert len(results) == 1
    (result,) = results
    assert result == "invalid" or result.startswith("+1")


@given(st.emails())
def test_email_normalization_is_idempotent(email):
    once = normalize_identifier(IdentifierType.email, email.upper())
    assert normalize_identifier(IdentifierType.email, once) == once
    assert once == once.strip().lower()


def test_times_are_stored_in_utc_and_far_future_refused(now: datetime):
    an_hour_ago = now - timedelta(hours=1)
    local = an_hour_ago.astimezone(timezone(timedelta(hours=2)))
    event = validate_event(cloud_event(tenant="acme", time=local.isoformat()), now=now)
    assert event.time == an_hour_ago
    assert event.time.utcoffset() == timedelta(0)
    with pytest.raises(EventRejected) as caught:
        validate_event(cloud_event(tenant="acme", time=now + timedelta(hours=1)), now=now)
    assert caught.value.reason is RejectReason.future_time


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1, 2", RejectReason.not_json),
        (orjson.dumps(cloud_event(tenant="acme", type="nope.nope")), RejectReason.unknown_type),
        (orjson.dumps({"specversion": "1.0", "tenant": "acme"}), RejectReason.missing_attribute),
        (orjson.dumps(cloud_event(tenant="acme", type="fact.collected")), RejectReason.schema),
        (orjson.dumps(cloud_event(tenant="acme", text="x" * 300_000)), RejectReason.oversized),
    ],
)
def test_rejections_carry_a_reason(raw, reason, now: datetime):
    with pytest.raises(EventRejected) as caught:
        validate_event(raw, now=now)
    assert caught.value.reason is reason
    assert caught.value.message


def test_normalized_events_round_trip(now: datetime):
    event = validate_event(
        cloud_event(
            tenant="acme",
            identifiers=[{"type": "phone", "value": "(415) 555-0123"}],
            time=now - timedelta(seconds=1),
        ),
        now=now,
    )
    again = parse_normalized(event.to_json())
    assert again == event
    assert event.primary_key() == "acme|phone:+14155550123"


def test_published_json_schema_is_up_to_date():
    """Regenerate with `waypoint schema` when the contract changes."""
    assert SCHEMA_PATH.read_bytes() == render_schema()
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    assert schema["discriminator"]["propertyName"] == "type"
    assert len(schema["oneOf"]) == 24


def test_schema_command_checks_the_shipped_file():
    from typer.testing import CliRunner

    from services.cli import app

    result = CliRunner().invoke(app, ["schema", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
