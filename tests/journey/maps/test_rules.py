"""The map's definitions (pure): steps, journeys, directly-follows, durations, histograms."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.journey.maps import activities, histogram, rules
from tests.journey.maps.reference import Ev, nearest_rank, ref_map
from tests.journey.maps.strategies import event_logs

WINDOW = rules.DEFAULT_WINDOW_US
BANDS = rules.DEFAULT_TENURE_DAYS


def facts(events: list[Ev]) -> list[rules.Fact]:
    return [rules.Fact(e.id, e.type, e.t, e.data) for e in events]


def derive(events: list[Ev]) -> tuple[dict, rules.Profile]:
    steps = rules.build_steps(facts(events))
    profile = rules.new_profile()
    for f in facts(events):
        rules.fold_profile(profile, f)
    return steps, profile


def totals(contrib: dict[rules.Group, rules.Part], kind: int) -> rules.Part:
    total = rules.Part()
    for (k, _day, _seg), part in contrib.items():
        if k == kind:
            total.add(part)
    total.prune()
    return total


def check_invariants(part: rules.Part) -> None:
    """sum(edges) = steps − journeys; count(a) = in(a) + starts(a) = out(a) + ends(a)."""
    count = Counter({a: v for (a, s), v in part.nodes.items() if s == "count"})
    starts = Counter({a: v for (a, s), v in part.nodes.items() if s == "starts"})
    ends = Counter({a: v for (a, s), v in part.nodes.items() if s == "ends"})
    into, out = Counter(), Counter()
    for (a, b, _), (n, _us) in part.edges.items():
        out[a] += n
        into[b] += n
    assert sum(n for n, _ in part.edges.values()) == sum(count.values()) - sum(starts.values())
    assert sum(starts.values()) == sum(ends.values())
    for a in count:
        assert count[a] == into[a] + starts[a] == out[a] + ends[a]


@pytest.mark.parametrize("kind", ["customer", "episode", "case"])
@settings(max_examples=150, deadline=None)
@given(events=event_logs())
def test_map_equals_the_plain_recomputation(kind: str, events: list[Ev]) -> None:
    steps, profile = derive(events)
    contrib = rules.contribution(steps.values(), profile, window_us=WINDOW, bands=BANDS)
    got = totals(contrib, rules.JOURNEYS[kind])
    ref = ref_map(events, kind, WINDOW)
    nodes = {a: v for (a, s), v in got.nodes.items() if s == "count"}
    assert nodes == dict(ref.nodes)
    assert {a: v for (a, s), v in got.nodes.items() if s == "starts"} == dict(ref.starts)
    assert {a: v for (a, s), v in got.nodes.items() if s == "ends"} == dict(ref.ends)
    edges: Counter = Counter()
    durations: Counter = Counter()
    for (a, b, _), (n, us) in got.edges.items():
        edges[(a, b)] += n
        durations[(a, b)] += us
    assert dict(edges) == dict(ref.edges)
    assert dict(durations) == {k: sum(v) for k, v in ref.durations.items()}
    check_invariants(got)


@settings(max_examples=150, deadline=None)
@given(events=event_logs(), data=st.data())
def test_any_arrival_order_and_chunking_gives_the_same_map(events: list[Ev], data) -> None:
    """The maintenance algorithm: fold chunks in any order, apply new − old each time."""
    expected_steps, expected_profile = derive(events)
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    steps: dict = {}
    profile = rules.new_profile()
    applied: dict[rules.Group, rules.Part] = {}
    total = rules.Deltas()
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        chunk = facts(shuffled[lo:hi])
        old = rules.contribution(steps.values(), profile, window_us=WINDOW, bands=BANDS)
        assert old == applied
        rules.build_steps(chunk, steps)
        for f in chunk:
            rules.fold_profile(profile, f)
        new = rules.contribution(steps.values(), profile, window_us=WINDOW, bands=BANDS)
        for group, part in rules.difference(old, new).items():
            total.add(group, part)
        applied = new
    assert steps == expected_steps
    assert profile == expected_profile
    one_shot = rules.Deltas()
    for group, part in applied.items():
        one_shot.add(group, part)
    names = sorted(total.segments() | one_shot.segments())
    at = {"": 0} | {name: i for i, name in enumerate((n for n in names if n), start=1)}
    assert total.take_nodes(at) == one_shot.take_nodes(at)
    assert total.take_edges(at) == one_shot.take_edges(at)
    assert not total.nodes
    assert not total.edges


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=60), st.sampled_from([0.5, 0.9]))
def test_histogram_quantiles_are_within_the_documented_error(values: list[int], q: float) -> None:
    counts: Counter = Counter(histogram.bucket(v) for v in values)
    estimate = histogram.quantile_s(dict(counts), q)
    exact = nearest_rank(values, q) / 1e6
    assert estimate is not None
    if exact < 0.001:
        assert estimate == 0.0
    else:
        assert abs(estimate - exact) <= histogram.RELATIVE_ERROR * exact * (1 + 1e-9)


def test_a_call_is_one_step_with_its_ivr_queue_transfer_and_abandon_facts() -> None:
    call = {"interaction_id": "c1"}
    events = [
        Ev("a", "contact.started", 10, {**call, "channel": "phone", "touchpoint": "inbound"}),
        Ev("b", "ivr.step", 20, {**call, "channel": "ivr", "touchpoint": "menu", "node": "main"}),
        Ev("c", "contact.queued", 30, {**call, "queue": "billing_q", "department": "billing"}),
        Ev("d", "agent.joined", 90_000_030, {**call, "team": "t1", "department": "care"}),
        Ev("e", "contact.transferred", 100_000_000, {**call, "to_department": "billing"}),
        Ev("f", "contact.ended", 200_000_000, {**call, "resolved": True}),
        Ev("g", "fact.collected", 5, {"name": "x", "value": 1}),  # annotation only
    ]
    steps, _ = derive(list(reversed(events)))
    (step,) = steps.values()
    v = rules.view(step)
    assert (v.time_us, v.event_id, v.activity) == (10, "a", "phone:inbound")
    assert v.stats == {
        "transfers": 1,
        "transferred": 1,
        "queued": 1,
        "answered": 1,
        "queue_wait_ms": 90_000,
        "resolution_known": 1,
        "resolved": 1,
        "dept:billing": 1,
        "sub:ivr:main": 1,
        "sub:queue:billing_q": 1,
        "sub:team:t1": 1,
    }


def test_standalone_steps_and_the_channel_fallback() -> None:
    events = [
        Ev("m", "marketing.touched", 1, {"channel": "email", "touchpoint": "campaign_x"}),
        Ev("p", "purchase.completed", 2, {"channel": "web", "touchpoint": "checkout"}),
        Ev("x", "customer.churned", 3, {}),
        Ev("s", "survey.responded", 4, {"channel": "phone"}),  # no interaction: not a step
    ]
    steps, profile = derive(events)
    assert [v.activity for v in rules.ordered(steps.values())] == [
        "email:campaign_x",
        "web:checkout",
        "customer.churned",
    ]
    assert profile["traits"]["lifecycle_stage"][2] == "churned"
    stages = [activities.stage_of(v.activity, {}) for v in rules.ordered(steps.values())]
    assert stages == ["awareness", "purchase", "exit"]


def test_episodes_split_on_gaps_longer_than_the_window_only() -> None:
    day = rules.DAY_US
    events = [
        Ev("1", "purchase.completed", 0, {"channel": "web"}),
        Ev("2", "purchase.completed", 7 * day, {"channel": "web"}),  # exactly the window: same
        Ev("3", "purchase.completed", 14 * day + 1, {"channel": "web"}),  # longer: new episode
    ]
    steps, profile = derive(events)
    views = rules.ordered(steps.values())
    episodes = [j for j in rules.journeys(views, window_us=7 * day) if j.kind == rules.EPISODE]
    assert [[s.event_id for s in j.steps] for j in episodes] == [["1", "2"], ["3"]]


def test_tenure_bands_and_segments() -> None:
    assert rules.tenure_labels((30, 90, 365)) == ["0-30d", "30-90d", "90-365d", "365d+"]
    profile = rules.new_profile()
    rules.fold_profile(profile, rules.Fact("a", "identity.linked", 0, {"traits": {"tier": "gold"}}))
    values = rules.seg_values(profile, 40 * rules.DAY_US, (30, 90))
    assert values == (None, None, "gold", None, "30-90d")
    assert rules.seg_keys(values) == ["", "tier=gold", "tenure=30-90d"]


def test_later_trait_wins_and_ties_break_by_event_id_in_any_order() -> None:
    events = [
        rules.Fact("b", "identity.linked", 5, {"traits": {"tier": "silver"}}),
        rules.Fact("a", "identity.linked", 5, {"traits": {"tier": "gold"}}),
        rules.Fact("c", "identity.linked", 1, {"traits": {"tier": "bronze"}}),
    ]
    results = set()
    for _ in range(10):
        random.shuffle(events)
        profile = rules.new_profile()
        for f in events:
            rules.fold_profile(profile, f)
        results.add(profile["traits"]["tier"][2])
    assert results == {"silver"}


def test_stage_mapping_prefers_the_tenant_then_the_channel_then_defaults() -> None:
    mapping = {"phone:inbound_call": "onboarding", "sms": "renewal"}
    assert activities.stage_of("phone:inbound_call", mapping) == "onboarding"
    assert activities.stage_of("sms:reminder", mapping) == "renewal"
    assert activities.stage_of("phone:agent_call", mapping) == "support"
    assert activities.stage_of("web:checkout", mapping) == "purchase"


def test_pm4py_is_never_imported_by_the_product_or_its_tests() -> None:
    """PM4Py is AGPL: only the benchmark (its own `bench` extra) may use it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    pattern = re.compile(r"^\s*(import|from)\s+" + "pm4" + r"py\b", re.M)
    offenders = [
        str(path.relative_to(root))
        for folder in ("services", "shared", "tests")
        for path in (root / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
    assert pattern.search((root / "bench" / "journey_map.py").read_text())


def test_deltas_name_the_segments_of_edge_only_changes():
    """A change that moves a duration and leaves every node as it was (a late event moving a
    step's time) still names its segment rows (found by the quality property test: a KeyError
    writing a segment that only an edge counted in)."""
    deltas = rules.Deltas()
    values = ("25-34", None, None, "churned", "0-30d")
    part = rules.Part(edges={("a", "b", 3): [0, 5_000]})
    deltas.add((rules.EPISODE, 20_000, values), part)
    assert deltas.segments() == {"", "age_group=25-34", "lifecycle_stage=churned", "tenure=0-30d"}
