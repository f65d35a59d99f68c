"""The worker's hot-path shortcuts give exactly what the plain code gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from services.journey.context.rules import iso
from services.journey.identity.rules import Claim, claim_of
from shared.events import IdentifierType, Verification, is_junk_value


@given(st.datetimes(timezones=st.just(UTC)))
def test_iso_of_a_utc_time_is_isoformat(t: datetime) -> None:
    assert iso(t) == t.isoformat()


@given(
    st.datetimes(
        timezones=st.none() | st.timedeltas(timedelta(hours=-23), timedelta(hours=23)).map(timezone)
    )
)
def test_iso_of_any_time_is_isoformat(t: datetime) -> None:
    assert iso(t) == t.isoformat()
    assert iso(None) is None


@given(
    st.sampled_from(list(IdentifierType)),
    st.sampled_from(["+14155550123", "0000000", "anonymous", "a@example.com", "x@y.io", "c-1"]),
    st.sampled_from([None, *Verification]),
)
def test_a_shared_claim_is_the_claim(
    id_type: IdentifierType, value: str, verified_by: Verification | None
) -> None:
    shared = claim_of(id_type, value, verified_by)
    fresh = Claim(id_type, value, verified_by)
    assert shared == fresh
    assert (shared.key, shared.strength) == (fresh.key, fresh.strength)
    assert shared.junk == is_junk_value(id_type, value)
    assert claim_of(id_type, value, verified_by) is shared
