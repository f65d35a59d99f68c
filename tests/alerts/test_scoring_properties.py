"""Properties of the scoring model that must hold for any input (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.alerts.model import DEFAULT_WEIGHTS, Factor, Params
from services.alerts.scoring import Aggregates, apply_event, score

# Midnight UTC 180 days ago: relative to the real clock, the same time of day on every run.
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=180)
KINDS = ["product.used", "contact.started", "contact.transferred", "contact.abandoned",
         "case.opened", "case.resolved", "survey.responded", "message.received",
         "purchase.completed", "feedback.submitted"]  # fmt: skip

events = st.lists(
    st.builds(
        lambda kind, hours, seats, purchased, case, survey, sentiment: {
            "id": "x",
            "type": kind,
            "time": (T0 + timedelta(hours=hours)).isoformat(),
            "data": {
                "active_seats": seats,
                "purchased_seats": purchased,
                "case_id": f"c{case}",
                "survey": survey[0],
                "score": survey[1],
                "sentiment": sentiment,
            },
        },  # fmt: skip
        st.sampled_from(KINDS),
        st.floats(0, 24 * 90),
        st.integers(0, 50),
        st.integers(0, 50),
        st.integers(0, 3),
        st.sampled_from([("csat", 1), ("csat", 5), ("nps", 0), ("nps", 10), ("ces", 7)]),
        st.floats(-1, 1),
    ),
    max_size=40,
)
weights = st.dictionaries(st.sampled_from(list(Factor)), st.floats(0, 100), min_size=6).filter(
    lambda w: sum(w.values()) > 0
)


def fold(evs: list[dict]) -> Aggregates:
    agg = Aggregates()
    for e in evs:
        agg = apply_event(agg, e, Params())
    return agg


@settings(max_examples=150, deadline=None)
@given(evs=events, w=weights, later=st.floats(0, 24 * 365))
def test_score_is_bounded_and_contributions_add_up(evs, w, later):
    result = score(fold(evs), w, Params(), T0 + timedelta(hours=24 * 90 + later))
    assert 0.0 <= result.value <= 100.0
    assert abs(sum(result.contributions.values()) - result.value) <= 0.05
    for factor, points in result.contributions.items():
        assert -1e-9 <= points <= result.max_points[factor] + 0.01
        assert 0.0 <= result.factors[factor] <= 1.0


@settings(max_examples=150, deadline=None)
@given(evs=events)
def test_arrival_order_never_matters_for_decayed_counters(evs):
    forward, backward = fold(evs), fold(list(reversed(evs)))
    at = T0 + timedelta(days=200)
    a = score(forward, DEFAULT_WEIGHTS, Params(), at)
    b = score(backward, DEFAULT_WEIGHTS, Params(), at)
    assert abs(a.factors["activity"] - b.factors["activity"]) <= 1e-6
    assert abs(a.factors["friction"] - b.factors["friction"]) <= 1e-6


@settings(max_examples=100, deadline=None)
@given(evs=events, quiet=st.floats(1, 24 * 365))
def test_silence_never_raises_activity(evs, quiet):
    agg = fold(evs)
    end = T0 + timedelta(days=91)
    before = score(agg, DEFAULT_WEIGHTS, Params(), end).factors["activity"]
    after = score(agg, DEFAULT_WEIGHTS, Params(), end + timedelta(hours=quiet)).factors["activity"]
    assert after <= before + 1e-12
