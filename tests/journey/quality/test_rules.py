"""Journey quality's pure rules: the billing example, FCR windows (properties), the policy's
override precedence, quality rows independent of the order events arrive in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.journey.maps import rules as maps
from services.journey.quality import rules
from services.journey.quality.policy import FcrPolicy, Override, parse_window
from tests.journey.maps.strategies import event_logs

D = 86_400_000_000
WINDOW = maps.DEFAULT_WINDOW_US
BANDS = maps.DEFAULT_TENURE_DAYS


def fact(eid: str, kind: str, t: int, **data) -> maps.Fact:
    return maps.Fact(eid, kind, t, data)


def call(
    iid: str, t: int, reason: str, *tail: maps.Fact, channel: str = "phone"
) -> list[maps.Fact]:
    start = fact(f"{iid}-0", "contact.started", t, interaction_id=iid, channel=channel,
                 touchpoint="inbound_call", contact_reason=reason)  # fmt: skip
    return [start, *tail]


def rows_of(facts: list[maps.Fact]) -> dict[str, rules.QRow]:
    steps = maps.build_steps(facts)
    profile = maps.new_profile()
    for f in facts:
        maps.fold_profile(profile, f)
    return rules.quality_rows(steps.values(), profile, window_us=WINDOW, bands=BANDS)


def test_the_billing_example_counts_resolved_for_7_days_and_not_for_35():
    facts = [
        *call(
            "c1", 0, "billing", fact("e1", "contact.ended", 600, interaction_id="c1", resolved=True)
        ),  # fmt: skip
        *call("c2", 30 * D, "billing"),
    ]
    row = rows_of(facts)["i:c1"]
    assert row.resolved is True
    assert row.next_any_us == row.next_same_us == 30 * D
    gap = rules.further_gap(row, same=False, reopen_counts=True)
    late = 400 * D
    assert rules.judge(row.at_us, gap, parse_window("7d"), late) == rules.RESOLVED
    assert rules.judge(row.at_us, gap, parse_window("35d"), late) == rules.REPEATED
    # judged on day 10: 7 days have elapsed, 35 have not
    assert rules.judge(row.at_us, gap, 7 * D, 10 * D) == rules.RESOLVED
    assert rules.judge(row.at_us, gap, 35 * D, 10 * D) == rules.OPEN
    assert rules.judge(row.at_us, gap, 35 * D, 31 * D) == rules.OPEN_REPEATED


def test_same_reason_reopens_and_callbacks():
    facts = [
        *call(
            "c1", 0, "billing", fact("k1", "case.opened", 1, interaction_id="c1", case_id="K1")
        ),  # fmt: skip
        *call("c2", 2 * D, "delivery"),
        fact("r1", "case.updated", 3 * D, case_id="K1", status="reopened"),
        *call("c3", 20 * D, "billing"),
        fact("cb", "callback.requested", 21 * D, interaction_id="form", channel="web"),
        *call(
            "c4",
            21 * D + 1,
            "billing",
            fact("cbd", "callback.completed", 21 * D + 2, interaction_id="c4", outcome="no_answer"),
        ),  # fmt: skip
    ]
    rows = rows_of(facts)
    first = rows["i:c1"]
    assert (first.next_any_us, first.next_same_us, first.reopen_us) == (2 * D, 20 * D, 3 * D)
    assert rules.further_gap(first, same=True, reopen_counts=False) == 20 * D
    assert rules.further_gap(first, same=True, reopen_counts=True) == 3 * D
    assert rules.further_gap(first, same=False, reopen_counts=False) == 2 * D
    assert rows["i:form"].contact is False
    assert rows["i:form"].callback == rules.CALLBACK_MISSED  # reached nobody
    assert rows["i:c4"].next_any_us is None


def test_an_episode_over_two_channels_with_nothing_resolved_is_marked_at_its_end():
    facts = [
        *call("c1", 0, "billing"),
        *call("c2", D, "billing", channel="web_chat"),
        *call(
            "c3",
            20 * D,
            "billing",
            fact("e3", "contact.ended", 20 * D + 5, interaction_id="c3", resolved=True),
            channel="email",
        ),  # fmt: skip
    ]
    rows = rows_of(facts)
    assert [rows[k].cross_unresolved for k in ("i:c1", "i:c2", "i:c3")] == [False, True, False]
    assert rows["i:c2"].prev_activity == "phone:inbound_call"
    assert rows["i:c3"].prev_activity is None  # a new episode after 19 days


times = st.integers(0, 100 * D)
gaps = st.one_of(st.none(), st.integers(0, 100 * D))
windows = st.integers(3_600_000_000, 60 * D)


@given(at=times, gap=gaps, w1=windows, w2=windows, as_of=st.integers(0, 300 * D))
def test_fcr_windows(at, gap, w1, w2, as_of):
    """Judged once the window elapsed; a repeat within a shorter window is one within a longer;
    resolved exactly when no further contact came within the window."""
    small, large = sorted((w1, w2))
    for w in (small, large):
        outcome = rules.judge(at, gap, w, as_of)
        elapsed = at + w < as_of
        assert (outcome in (rules.RESOLVED, rules.REPEATED)) == elapsed
        if elapsed:
            assert (outcome == rules.RESOLVED) == (gap is None or gap > w)
        if outcome == rules.OPEN_REPEATED:
            assert gap is not None
            assert at + gap <= as_of
    # judged once the window has elapsed *before* as_of (``judge``): strictly
    if at + large < as_of and rules.judge(at, gap, small, as_of) == rules.REPEATED:
        assert rules.judge(at, gap, large, as_of) == rules.REPEATED


@given(
    population=st.lists(st.tuples(times, gaps), max_size=30),
    ws=st.lists(windows, min_size=2, max_size=4),
)
def test_fcr_rate_never_rises_with_the_window_among_contacts_judged_by_all(population, ws):
    as_of = 400 * D
    rates = []
    for w in sorted(ws):
        outcomes = [rules.judge(at, gap, w, as_of) for at, gap in population]
        rates.append(sum(o == rules.RESOLVED for o in outcomes))
    assert rates == sorted(rates, reverse=True)


selectors = st.fixed_dictionaries(
    {},
    optional={
        "reason": st.sampled_from(["billing", "delivery"]),
        "channel": st.sampled_from(["phone", "email"]),
        "segment": st.dictionaries(st.sampled_from(["tier", "region"]), st.sampled_from(["a", "b"]),
                                   max_size=2),
    },
)  # fmt: skip


@given(
    chosen=st.lists(selectors, max_size=8),
    reason=st.sampled_from([None, "billing", "delivery"]),
    channel=st.sampled_from(["phone", "email"]),
    tier=st.sampled_from([None, "a", "b"]),
    region=st.sampled_from([None, "a", "b"]),
)
def test_the_most_specific_override_wins_then_the_first_listed(
    chosen, reason, channel, tier, region
):
    overrides, seen = [], set()
    for i, sel in enumerate(chosen):
        if not (sel.get("reason") or sel.get("channel") or sel.get("segment")):
            continue
        o = Override(**sel, window=f"{i + 1}d")
        if o.selector not in seen:
            seen.add(o.selector)
            overrides.append(o)
    policy = FcrPolicy(default_window="400d", overrides=overrides)
    segment = {"tier": tier, "region": region}
    matching = [(i, o) for i, o in enumerate(overrides) if o.matches(reason, channel, segment)]
    expected = 400 * D
    if matching:
        best = max(o.specificity for _, o in matching)
        first = min(i for i, o in matching if o.specificity == best)
        expected = parse_window(overrides[first].window)
    assert policy.window_for(reason, channel, segment) == expected


@settings(max_examples=60, deadline=None)
@given(events=event_logs(customers=1, max_size=20), seed=st.integers(0, 2**32))
def test_quality_rows_do_not_depend_on_arrival_order(events, seed):
    facts = [maps.Fact(e.id, e.type, e.t, e.data) for e in events]
    expected = rows_of(facts)
    shuffled = facts[:]
    random.Random(seed).shuffle(shuffled)
    steps: dict[str, maps.Step] = {}
    profile = maps.new_profile()
    for f in shuffled:  # folded one by one, as late events are
        maps.build_steps([f], steps)
        maps.fold_profile(profile, f)
    got = rules.quality_rows(steps.values(), profile, window_us=WINDOW, bands=BANDS)
    assert got == expected


@pytest.mark.parametrize("text", ["7", "7x", "0d", "401d", "-1d", "1.5d", "d", "99999h"])
def test_bad_windows_are_refused(text):
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the user's
        parse_window(text)


def test_bad_policies_are_refused():
    for bad in (
        {"overrides": [{"window": "7d"}]},
        {"overrides": [{"segment": {"shoe": "44"}, "window": "7d"}]},
        {"further_contact": "same_case"},
        {"default_window": "7 days"},
    ):
        with pytest.raises(ValidationError):
            FcrPolicy.model_validate(bad)
