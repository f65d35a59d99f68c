"""A small hand-written log with known journeys: hand-offs, repeats, abandons, a transfer, a
case across chat and phone, outcomes, a timestamp tie and a long gap (two episodes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.journey.maps.reference import Ev

H, D = 3600, 86400
S = 1_000_000


def base_time() -> datetime:
    """Midnight UTC twenty days ago: journeys start on known days relative to it."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=20)


def _ev(customer: str, n: int, kind: str, seconds: float, **data: Any) -> Ev:
    return Ev(f"{customer}-{n:02d}", kind, round(seconds * S), data, customer)


def call(
    customer: str, n: int, at: float, iid: str, tail: list[tuple[str, float, dict]]
) -> list[Ev]:
    out = [_ev(customer, n, "contact.started", at, interaction_id=iid, channel="phone",
               touchpoint="inbound_call", contact_reason="billing")]  # fmt: skip
    for i, (kind, dt, data) in enumerate(tail, start=1):
        out.append(_ev(customer, n + i, kind, at + dt, interaction_id=iid, **data))
    return out


TRAITS = {
    "A": {"age_group": "18-24", "region": "emea", "tier": "gold"},
    "B": {"age_group": "65+", "region": "na", "tier": "silver"},
    "C": {"age_group": "18-24", "region": "na"},
}


def events() -> list[Ev]:
    ivr = ("ivr.step", 10, {"channel": "ivr", "touchpoint": "ivr_main_menu", "node": "main"})
    out: list[Ev] = []
    for customer, traits in TRAITS.items():
        out.append(_ev(customer, 0, "identity.linked", 0, traits=traits))
    # A: call (IVR, queue, agent, transfer, resolved) → chat (bot) → call abandoned in the IVR;
    # ten days later a purchase: a second episode.
    out += call("A", 1, H, "a1", [
        ivr,
        ("contact.queued", 20, {"queue": "billing_q", "department": "billing"}),
        ("agent.joined", 80, {"agent_id": "ag1", "team": "t1", "department": "care"}),
        ("contact.transferred", 120, {"to_department": "billing", "to_team": "t2"}),
        ("contact.ended", 300, {"resolved": True, "disposition": "resolved"}),
    ])  # fmt: skip
    out += [
        _ev("A", 10, "contact.started", 2 * H, interaction_id="a2", channel="web_chat",
            touchpoint="web_chat"),
        _ev("A", 11, "bot.step", 2 * H + 5, interaction_id="a2", channel="bot",
            touchpoint="chat_bot", node="greeting"),
        _ev("A", 12, "contact.ended", 2 * H + 60, interaction_id="a2", resolved=False),
    ]  # fmt: skip
    out += call("A", 20, 3 * H, "a3", [
        ivr, ("contact.abandoned", 40, {"channel": "ivr", "where": "ivr", "wait_s": 30.0}),
    ])  # fmt: skip
    out.append(_ev("A", 30, "purchase.completed", 12 * D, channel="web", touchpoint="checkout"))
    # B: social → chat (opens case K1) → call abandoned in the queue → call that resolves K1.
    out += [
        _ev("B", 1, "message.received", D, interaction_id="b1", channel="social",
            touchpoint="social_mention", sentiment=-0.5),
        _ev("B", 2, "message.sent", D + 600, interaction_id="b1", channel="social",
            touchpoint="social_mention", agent_id="social-bot"),
        _ev("B", 3, "contact.started", D + H, interaction_id="b2", channel="web_chat",
            touchpoint="web_chat"),
        _ev("B", 4, "case.opened", D + H + 30, interaction_id="b2", case_id="K1"),
    ]  # fmt: skip
    out += call("B", 10, D + 3 * H, "b3", [
        ("contact.queued", 20, {"queue": "billing_q", "department": "billing"}),
        ("contact.abandoned", 420, {"where": "queue", "wait_s": 400.0, "queue": "billing_q"}),
    ])  # fmt: skip
    out += call("B", 20, D + 4 * H, "b4", [
        ("agent.joined", 30, {"agent_id": "ag2", "team": "t1", "department": "billing"}),
        ("case.resolved", 200, {"case_id": "K1"}),
        ("contact.ended", 250, {"resolved": True}),
    ])  # fmt: skip
    # C: campaign → purchase; churned (no channel) 10 days later.
    out += [
        _ev("C", 1, "marketing.touched", 5 * D, channel="email", touchpoint="campaign_spring"),
        _ev("C", 2, "purchase.completed", 5 * D + 2 * H, channel="web", touchpoint="checkout"),
        _ev("C", 3, "customer.churned", 15 * D + 60, reason="price"),
    ]  # fmt: skip
    # D (no traits): two calls a minute apart (a self-loop), then two steps at the same instant:
    # the tie is broken by event id (D-40 purchase before D-41 campaign).
    out += call("D", 1, 2 * D, "d1", [("contact.ended", 30, {"resolved": False})])
    out += call("D", 10, 2 * D + 60, "d2", [("contact.ended", 30, {"resolved": True})])
    out += [
        _ev("D", 41, "marketing.touched", 3 * D, channel="email", touchpoint="campaign_spring"),
        _ev("D", 40, "purchase.completed", 3 * D, channel="web", touchpoint="checkout"),
    ]
    return out
