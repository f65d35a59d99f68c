"""Hypothesis strategies: random event logs with ties, self-loops, gaps, cases and traits."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.journey.maps.reference import Ev

S = 1_000_000
TIMES = [0, 0, 1, 2, 59, 60, 3_600, 3 * 86_400, 8 * 86_400, 8 * 86_400 + 1, 30 * 86_400]
TYPES = [
    "contact.started",
    "ivr.step",
    "contact.queued",
    "agent.joined",
    "contact.transferred",
    "contact.abandoned",
    "contact.ended",
    "message.received",
    "marketing.touched",
    "purchase.completed",
    "case.opened",
    "case.resolved",
    "customer.churned",
    "fact.collected",
    "identity.linked",
    "survey.responded",
]


@st.composite
def event_data(draw: Any, kind: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    interaction = draw(st.sampled_from([None, None, "i1", "i2", "i3", "i4"]))
    if interaction:
        data["interaction_id"] = interaction
    channel = draw(st.sampled_from([None, "phone", "ivr", "web_chat", "email"]))
    if channel:
        data["channel"] = channel
    touchpoint = draw(st.sampled_from([None, "menu", "queue_a", "agent"]))
    if touchpoint:
        data["touchpoint"] = touchpoint
    if kind.startswith("case."):
        data["case_id"] = draw(st.sampled_from(["k1", "k2"]))
    if kind == "ivr.step":
        data["node"] = draw(st.sampled_from(["main", "pin"]))
    if kind == "contact.queued":
        data["queue"] = "billing_queue"
    if kind == "contact.abandoned":
        data["where"] = draw(st.sampled_from(["ivr", "queue"]))
        data["wait_s"] = draw(st.sampled_from([None, 12.5, 300.0]))
    if kind == "contact.transferred":
        data["to_department"] = draw(st.sampled_from(["billing", "tech"]))
    if kind == "contact.ended":
        data["resolved"] = draw(st.sampled_from([None, True, False]))
    if kind == "identity.linked":
        data["traits"] = {
            "age_group": draw(st.sampled_from(["18-24", "65+"])),
            "tier": draw(st.sampled_from(["gold", "silver", None])),
        }
    if kind == "survey.responded":
        data["survey"], data["score"] = "csat", draw(st.sampled_from([1, 5]))
    if kind == "fact.collected":
        data["name"], data["value"] = "order_number", "A-1"
    if kind == "agent.joined":
        data["agent_id"] = "agent-1"
        data["team"] = draw(st.sampled_from(["care", "billing-tier2"]))
        data["department"] = draw(st.sampled_from(["care", "billing"]))
    return data


@st.composite
def event_logs(draw: Any, customers: int = 1, max_size: int = 24) -> list[Ev]:
    n = draw(st.integers(min_value=1, max_value=max_size))
    # Ids in a random order relative to times: ties must be broken by id, not by arrival.
    ids = draw(st.permutations([f"ev{i:03d}" for i in range(n)]))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(TYPES))
        t = draw(st.sampled_from(TIMES)) * S + draw(st.sampled_from([0, 0, 1, 999_999]))
        customer = f"c{draw(st.integers(0, customers - 1))}"
        events.append(Ev(ids[i], kind, t, draw(event_data(kind)), customer))
    return events


@st.composite
def bridges(draw: Any, customers: int) -> list[tuple[int, int, int]]:
    """(time in seconds, customer a, customer b): identity.linked events that merge a and b."""
    pairs = st.tuples(
        st.sampled_from(TIMES), st.integers(0, customers - 1), st.integers(0, customers - 1)
    )
    return [p for p in draw(st.lists(pairs, max_size=3)) if p[1] != p[2]]
