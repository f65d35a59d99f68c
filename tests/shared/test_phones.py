"""Phone numbers: read in a region, refused unless valid, and the region setting itself."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.config import IngestSettings
from services.journey.config import JourneySettings
from shared.config import CommonSettings
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
from shared.events.identifiers import PHONE_REGIONS, normalize_phone, normalize_region
from tests.support import cloud_event


def phone(value: str, region: str) -> str:
    return normalize_identifier(IdentifierType.phone, value, default_region=region)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("8 (912) 345-67-89", "RU", "+79123456789"),
        ("+7 912 345-67-89", "US", "+79123456789"),
        ("138 0013 8000", "CN", "+8613800138000"),
        ("+86 138 0013 8000", "RU", "+8613800138000"),
        ("(415) 555-0123", "US", "+14155550123"),
    ],
)
def test_national_numbers_are_read_in_the_region_given(raw, region, expected):
    assert phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("138 0013 8000", "US"),  # +13800138000: right length, but no such US number
        ("8 (912) 345-67-89", "US"),
        ("+1 555 555 0123", "CN"),  # 555 is no US area code
    ],
)
def test_numbers_that_are_possible_but_not_valid_are_refused(raw, region):
    with pytest.raises(InvalidIdentifier, match="not a valid phone number"):
        phone(raw, region)


def test_the_refusal_says_how_a_national_number_was_read():
    with pytest.raises(InvalidIdentifier) as caught:
        phone("138 0013 8000", "US")
    assert "read in region US as +13800138000" in str(caught.value)
    assert "+country code" in str(caught.value)


def test_one_invalid_phone_refuses_the_whole_event_naming_the_identifier():
    event = cloud_event(
        tenant="acme",
        identifiers=[
            {"type": "email", "value": "ann@customer.test"},
            {"type": "phone", "value": "138 0013 8000"},
        ],
    )
    with pytest.raises(EventRejected) as caught:
        validate_event(event, now=datetime.now(UTC), phone_region="US")
    assert caught.value.reason is RejectReason.invalid_identifier
    assert caught.value.message.startswith("data.identifiers.1: not a valid phone number")
    accepted = validate_event(event, now=datetime.now(UTC), phone_region="CN")
    assert [i.key for i in accepted.identifiers] == [
        "email:ann@customer.test",
        "phone:+8613800138000",
    ]


def test_a_malformed_email_is_an_invalid_identifier_too():
    event = cloud_event(tenant="acme", identifiers=[{"type": "email", "value": "not-mail"}])
    with pytest.raises(EventRejected) as caught:
        validate_event(event, now=datetime.now(UTC))
    assert caught.value.reason is RejectReason.invalid_identifier


def test_stored_events_stay_readable_when_the_rules_tighten():
    """An event normalized before numbers had to be valid is still read back as stored."""
    stored = validate_event(cloud_event(tenant="acme"), now=datetime.now(UTC)).model_dump(
        mode="json", exclude_none=True
    )
    stored["data"]["identifiers"] = [{"type": "phone", "value": "+13800138000"}]
    event = parse_normalized(orjson.dumps(stored))
    assert event.identifiers[0].key == "phone:+13800138000"


def test_regions_are_checked_and_upper_cased():
    assert normalize_region(" ru ") == "RU"
    with pytest.raises(ValueError, match="unknown phone region 'XX'"):
        normalize_region("XX")
    assert "001" not in PHONE_REGIONS  # the non-geographic code reads no national number


def test_one_region_setting_for_every_service_with_the_old_name_as_alias(monkeypatch):
    monkeypatch.delenv("WAYPOINT_PHONE_REGION", raising=False)
    monkeypatch.delenv("WAYPOINT_INGEST_PHONE_REGION", raising=False)
    assert CommonSettings().phone_region == "US"
    monkeypatch.setenv("WAYPOINT_INGEST_PHONE_REGION", "cn")  # deprecated, still honoured
    assert IngestSettings().phone_region == JourneySettings().phone_region == "CN"
    monkeypatch.setenv("WAYPOINT_PHONE_REGION", "RU")  # the new name wins
    assert IngestSettings().phone_region == JourneySettings().phone_region == "RU"
    monkeypatch.setenv("WAYPOINT_PHONE_REGION", "Russia")
    with pytest.raises(ValidationError, match="unknown phone region"):
        CommonSettings()


# Properties over real numbers of every region phonenumbers knows: the example number of each
# type (mobile, fixed line, toll free …) that the region has.
_EXAMPLES = [
    (region, number)
    for region in sorted(PHONE_REGIONS)
    for kind in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
    )
    if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    and phonenumbers.is_valid_number(number)
]
_FORMATS = [
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.E164,
]


@given(
    example=st.sampled_from(_EXAMPLES),
    fmt=st.sampled_from(_FORMATS),
    other=st.sampled_from(sorted(PHONE_REGIONS)),
)
def test_a_valid_number_in_any_written_form_has_one_key(example, fmt, other):
    region, number = example
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    written = phonenumbers.format_number(number, fmt)
    if is_junk_value(IdentifierType.phone, written):
        return  # placeholder-like example numbers (…1234567) are kept apart as junk
    assert phone(written, region) == e164
    # With its country code it reads the same in any region, and the key is a fixed point.
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    assert phone(international, other) == e164
    assert phone(e164, other) == e164


@given(
    text=st.text(alphabet="0123456789 +-().", max_size=20),
    region=st.sampled_from(["US", "RU", "CN", "DE", "GB", "IN"]),
)
def test_whatever_is_accepted_is_a_valid_number_or_flagged_junk(text, region):
    try:
        key = normalize_phone(text, region)
    except InvalidIdentifier:
        return
    if is_junk_value(IdentifierType.phone, key):
        return  # kept, and never used to link anyone
    parsed = phonenumbers.parse(key, None)
    assert phonenumbers.is_valid_number(parsed)
    assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == key
    assert normalize_phone(key, "CN") == normalize_phone(key, "US") == key
