"""Pure parts of the worker: decoding both bindings, classifying a batch, dead-letter headers."""

from collections import namedtuple
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from services.ingest.batch import classify, plan
from services.ingest.records import Limits, dead_letter_headers, decode
from shared.events import EventRejected, RejectReason, has_nul
from tests.support import cloud_event

Record = namedtuple("Record", "topic partition offset key value headers")
LIMITS = Limits(max_bytes=4096, max_future=timedelta(minutes=5), phone_region="DE")


def record(value: bytes | None, headers=(), offset: int = 0) -> Record:
    return Record("raw", 0, offset, None, value, list(headers))


def test_binary_mode_rebuilds_the_event_from_headers(now: datetime):
    an_hour_ago = now - timedelta(hours=1)
    local = an_hour_ago.astimezone(timezone(timedelta(hours=1)))
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-1"),
        ("ce_source", b"pbx"),
        ("ce_type", b"contact.started"),
        ("ce_time", local.isoformat().encode()),
        ("ce_tenant", b"acme"),
        ("content-type", b"application/json; charset=utf-8"),
    ]
    data = {"identifiers": [{"type": "phone", "value": "030 1234567"}], "channel": "phone"}
    event = decode(orjson.dumps(data), headers, now=now, limits=LIMITS)
    assert (event.id, event.source, event.tenant) == ("e-1", "pbx", "acme")
    assert event.time == an_hour_ago
    assert event.time.utcoffset() == timedelta(0)
    assert event.identifiers[0].value == "+49301234567"  # the configured default region


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff\xfe", (), RejectReason.not_json),
        (b"[1, 2]", (), RejectReason.schema),
        (b"{}" + b" " * 5000, (), RejectReason.oversized),
        (b"not json", [("ce_specversion", b"1.0")], RejectReason.not_json),
        (b"{}", [("ce_specversion", b"1.0"), ("content-type", b"text/xml")], RejectReason.schema),
    ],
)
def test_undecodable_records_say_why(value, headers, reason, now: datetime):
    with pytest.raises(EventRejected) as caught:
        decode(value, headers, now=now, limits=LIMITS)
    assert caught.value.reason is reason


def test_plan_dedupes_refuses_unknown_tenants_and_nul_characters(now: datetime):
    first = cloud_event(tenant="acme", time=now, channel="sms")
    stranger = cloud_event(tenant="nobody", time=now)
    nul = cloud_event(tenant="acme", time=now, text="bad\x00byte")
    records = [
        record(orjson.dumps(first), offset=0),
        record(orjson.dumps(first), offset=1),
        record(orjson.dumps(stranger), offset=2),
        record(orjson.dumps(nul), offset=3),
        record(b"{oops", offset=4),
    ]
    accepted, refused = classify(records, now=now, limits=Limits(10_000, LIMITS.max_future, "US"))
    work = plan(accepted, refused, known_tenants={"acme"}, received_at=now)
    assert [row[1] for row in work.rows] == [first["id"]]
    assert work.rows[0][6] == "sms"
    assert work.publish[0][0].startswith(b"acme|email:")
    reasons = {r.offset: rej.reason for r, rej in work.rejects}
    assert reasons == {
        2: RejectReason.unknown_tenant,
        3: RejectReason.schema,
        4: RejectReason.not_json,
    }
    tenants = {r.offset: rej.tenant for r, rej in work.rejects}
    assert tenants == {2: None, 3: "acme", 4: None}
    assert work.received == {"sms": 2, "unknown": 3}
    assert work.duplicates_in_batch == {"sms": 1}


def test_has_nul_tells_an_escaped_backslash_apart():
    assert has_nul(orjson.dumps("a\x00"))
    assert not has_nul(orjson.dumps("C:\\u0000dir"))  # a backslash, then the text u0000
    assert has_nul(orjson.dumps("\\\x00"))


def test_dead_letter_headers_keep_the_original_and_say_where_from(now: datetime):
    rejection = plan(
        [],
        [(record(b"x"), EventRejected(RejectReason.not_json, "nope"))],
        known_tenants=set(),
        received_at=now,
    ).rejects[0][1]
    headers = dead_letter_headers(
        [("trace", b"t-1"), ("waypoint-reason", b"stale")],
        rejection,
        topic="raw",
        partition=3,
        offset=42,
    )
    assert headers == [
        ("trace", b"t-1"),
        ("waypoint-reason", b"not_json"),
        ("waypoint-error", b"nope"),
        ("waypoint-source-topic", b"raw"),
        ("waypoint-source-partition", b"3"),
        ("waypoint-source-offset", b"42"),
    ]
