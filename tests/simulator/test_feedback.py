"""The simulator's feedback names what it is about by a node of the journey map: placed by
journey's own rules on the person's steps, every ``feedback.submitted`` attaches through its
``about`` (a step, or a touchpoint), so the demo's map shows feedback on its nodes."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from services.journey.experience.feedback import Feedback, place
from services.journey.maps import rules as maps
from services.simulator import generate_keyed

START = datetime(2026, 1, 5, tzinfo=UTC) - timedelta(days=30)


def test_every_feedback_is_about_a_node_of_the_map() -> None:
    people: dict[str, list[maps.Fact]] = defaultdict(list)
    for key, event in generate_keyed(customers=400, seed=11, tenant="acme", start=START, days=30):
        time = datetime.fromisoformat(event["time"])
        people[key].append(maps.Fact(event["id"], event["type"], maps.to_us(time), event["data"]))
    steps = {key: maps.build_steps(facts) for key, facts in people.items()}
    known = {maps.activity_of(s) for person in steps.values() for s in person.values()}

    placed: Counter[tuple[str, str]] = Counter()
    for key, facts in people.items():
        views = maps.ordered(steps[key].values())
        for fact in facts:
            if fact.type != "feedback.submitted":
                continue
            about = fact.data.get("about")
            feedback = Feedback(
                event_id=fact.event_id,
                time_us=fact.time_us,
                author=fact.data["author"],
                rating=None,
                comment=fact.data["comment"],
                about=about,
                interaction=fact.data.get("interaction_id"),
            )
            where = place(feedback, steps[key], views, known)
            touchpoint = fact.data["touchpoint"]
            placed[(touchpoint, where.by)] += 1
            if about is not None:
                assert where.by in {"about_node", "about_step", "about_touchpoint"}, (fact, where)
                assert where.node in known
    touchpoints = {t for t, _ in placed}
    assert touchpoints == {"agent_call", "exit_survey", "in_app_feedback"}, placed
    # Only in-app feedback before any step of the person goes without ``about``.
    unnamed = sum(
        n for (t, by), n in placed.items() if by not in {"about_step", "about_touchpoint"}
    )
    assert unnamed <= placed.total() // 10, placed
