"""Experience rules: tying a survey to a step, its position, and moments of truth on planted
and on effect-free data (pure)."""

from __future__ import annotations

import random

import pytest

from services.journey.experience import rules, stats
from services.journey.maps import rules as maps


def fact(eid: str, kind: str, t: int, **data) -> maps.Fact:
    return maps.Fact(eid, kind, t, data)


def customer_steps() -> dict[str, maps.Step]:
    return maps.build_steps(
        [
            fact("e1", "contact.started", 10, interaction_id="chat", channel="web_chat",
                 touchpoint="chat"),
            fact("e2", "contact.started", 20, interaction_id="call", channel="phone",
                 touchpoint="inbound"),
            fact("e3", "contact.transferred", 21, interaction_id="call"),
            fact("e4", "contact.transferred", 22, interaction_id="call"),
            fact("e5", "contact.started", 30, interaction_id="call2", channel="phone",
                 touchpoint="inbound"),
            # a survey sent in its own session: not a step anything is tied to
            fact("e6", "survey.responded", 40, interaction_id="sms-survey", channel="sms",
                 survey="csat", score=2),
        ]
    )  # fmt: skip


def test_a_survey_is_tied_to_its_interaction_else_to_the_last_step_before():
    steps = customer_steps()
    views = maps.ordered(steps.values())
    assert rules.attach(50, "chat", steps, views) == "i:chat"
    assert rules.attach(25, None, steps, views) == "i:call"
    assert rules.attach(50, "unknown-interaction", steps, views) == "i:call2"  # not i:sms-survey
    assert rules.attach(5, None, steps, views) is None


def test_position_edge_transfers_repeats_and_stage():
    steps = customer_steps()
    views = [v for v in maps.ordered(steps.values()) if rules.counts_as_step(steps[v.key])]
    f = lambda a: a  # noqa: E731
    stage = lambda a: "support"  # noqa: E731, ARG005
    first = rules.position(views, 0, f, stage)
    assert first.edge == (rules.START, "web_chat:chat")
    call = rules.position(views, 1, f, stage)
    assert call.edge == ("web_chat:chat", "phone:inbound")
    assert (call.transfers, call.repeats) == (2, 0)
    again = rules.position(views, 2, f, stage)
    assert again.edge == ("phone:inbound", "phone:inbound")
    assert (again.transfers, again.repeats) == (2, 1)
    assert rules.bucket(5) == "3+"


def test_summaries():
    assert stats.summary("csat", [5, 4, 2]) == {"n": 3, "mean": 3.667, "satisfied_share": 0.6667}
    assert stats.summary("nps", [10, 9, 7, 3]) == {
        "n": 4,
        "score": 25.0,
        "promoters": 2,
        "detractors": 1,
    }
    assert stats.summary("ces", [2, 3]) == {"n": 2, "mean": 2.5}


def units(effect: float, seed: int, n: int = 400):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        feats = {"step:phone:agent"}
        if rng.random() < 0.4:
            feats.add("step:phone:retention")
        if rng.random() < 0.5:
            feats.add("outcome:transferred")
        score = rng.gauss(4.0, 0.8) - (effect if "step:phone:retention" in feats else 0)
        rows.append((feats, score))
    return {"csat": rows}


def test_a_planted_moment_is_found_with_its_interval():
    found, tested = rules.moments_of_truth(units(1.0, seed=1), min_sample=30, limit=5)
    assert tested == {"csat": 2}  # phone:agent is in every unit: nothing to compare
    (moment,) = found
    assert moment["node"] == "phone:retention"
    assert moment["direction"] == "worse"
    low, high = moment["ci95"]
    assert low < moment["effect"] < high < 0
    assert moment["effect"] == pytest.approx(-1.0, abs=0.25)
    assert moment["with"]["n"] + moment["without"]["n"] == 400


@pytest.mark.parametrize("seed", range(5))
def test_no_moment_on_data_without_an_effect(seed):
    found, _ = rules.moments_of_truth(units(0.0, seed=seed), min_sample=30, limit=5)
    assert found == []


def test_small_samples_and_the_limit():
    found, tested = rules.moments_of_truth(units(1.0, seed=2, n=40), min_sample=30, limit=5)
    assert found == []
    assert tested == {"csat": 0}
    assert rules.moments_of_truth(units(1.0, seed=1), min_sample=30, limit=0)[0] == []
