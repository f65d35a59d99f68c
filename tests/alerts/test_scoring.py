from datetime import UTC, datetime, timedelta

import time_machine

from services.alerts.model import DEFAULT_WEIGHTS, Factor, Params
from services.alerts.scoring import Aggregates, apply_event, decay_to, merge, score

# Midnight UTC 60 days ago: relative to the real clock, the same time of day on every run.
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=60)
PARAMS = Params()


def event(kind: str, at: datetime, **data) -> dict:
    return {"id": f"{kind}-{at.isoformat()}", "type": kind, "time": at.isoformat(), "data": data}


def fold(events: list[dict]) -> Aggregates:
    agg = Aggregates()
    for e in events:
        agg = apply_event(agg, e, PARAMS)
    return agg


def test_activity_decays_with_its_half_life():
    agg = fold([event("product.used", T0) for _ in range(8)])
    assert agg.activity == 8
    later = decay_to(agg, T0 + timedelta(days=PARAMS.activity_half_life_days), PARAMS)
    assert abs(later.activity - 4.0) < 1e-9
    assert agg.activity == 8  # pure: the input is unchanged


def test_arrival_order_does_not_change_the_aggregates():
    events = [event("product.used", T0 + timedelta(days=d)) for d in (0, 3, 9, 1)]
    forward, backward = fold(events), fold(list(reversed(events)))
    at = T0 + timedelta(days=20)
    assert (
        abs(decay_to(forward, at, PARAMS).activity - decay_to(backward, at, PARAMS).activity) < 1e-9
    )


def test_contributions_sum_to_the_score_and_factors_without_data_are_left_out():
    agg = fold([event("product.used", T0, active_seats=5, purchased_seats=10) for _ in range(10)])
    result = score(agg, DEFAULT_WEIGHTS, PARAMS, T0)
    assert set(result.contributions) == {"activity", "utilisation", "cases", "friction"}
    assert abs(sum(result.contributions.values()) - result.value) < 0.05
    # activity full (35), utilisation half (25/2), no cases (10), no friction (10) of 80 weight
    assert abs(result.value - 100 * (35 + 12.5 + 10 + 10) / 80) < 0.01
    assert result.max_points["activity"] == round(100 * 35 / 80, 2)


def test_silence_alone_lowers_the_score():
    agg = fold([event("product.used", T0) for _ in range(10)])
    now = score(agg, DEFAULT_WEIGHTS, PARAMS, T0).value
    later = score(agg, DEFAULT_WEIGHTS, PARAMS, T0 + timedelta(days=30)).value
    assert later < now - 20


def test_friction_cases_surveys_and_sentiment_count():
    base = [event("product.used", T0) for _ in range(10)]
    calm = score(fold(base), DEFAULT_WEIGHTS, PARAMS, T0).value
    rough = fold(
        base
        + [event("contact.transferred", T0), event("contact.abandoned", T0, where="ivr")] * 2
        + [event("case.opened", T0, case_id="c1"), event("case.opened", T0, case_id="c2")]
        + [event("survey.responded", T0, survey="csat", score=1)]
        + [event("message.received", T0, sentiment=-0.8)]
    )
    result = score(rough, DEFAULT_WEIGHTS, PARAMS, T0)
    assert result.factors["friction"] < 0.3
    assert result.factors["cases"] < 0.5
    assert result.factors["satisfaction"] == 0.0
    assert result.factors["sentiment"] < 0.2
    assert result.value < calm - 30
    resolved = apply_event(rough, event("case.resolved", T0, case_id="c1"), PARAMS)
    assert resolved.open_cases == ["c2"]


def test_repeat_contacts_within_the_window_count_and_outbound_is_not_activity():
    agg = fold(
        [
            event("contact.started", T0),
            event("contact.started", T0 + timedelta(hours=2)),
            event("contact.started", T0 + timedelta(days=30)),
            event("contact.started", T0 + timedelta(days=31), direction="outbound"),
        ]
    )
    assert 0.4 < agg.repeats < 2.0  # two repeats (hours apart, days apart), decayed
    assert agg.activity < 3.0  # the outbound call added nothing


def test_merge_adds_counters_and_unites_cases():
    a = fold([event("product.used", T0), event("case.opened", T0, case_id="x")])
    b = fold([event("product.used", T0 + timedelta(days=1)), event("case.opened", T0, case_id="y")])
    merged = merge(a, b, PARAMS)
    assert merged.open_cases == ["x", "y"]
    assert abs(merged.activity - (decay_to(a, merged.decayed_at, PARAMS).activity + 1.0)) < 1e-9


def test_unknown_or_timeless_events_change_nothing():
    agg = fold([event("product.used", T0)])
    assert apply_event(agg, {"type": "product.used", "data": {}}, PARAMS) is agg


def test_time_machine_decay_is_relative_to_the_clock():
    agg = fold([event("product.used", T0) for _ in range(10)])
    with time_machine.travel(T0 + timedelta(days=28), tick=False):
        now = datetime.now(UTC)
        assert score(agg, {Factor.activity: 1.0}, PARAMS, now).value == 25.0
