"""Hand-built journeys with known answers, at fixed times (nothing depends on today's date).

- ``ann``: the billing example — a billing call resolved (agent-declared) on 2025-03-03, the
  next bill wrong again: another billing call 30 days later.
- ``bob``: a delivery call by phone, then two days later an e-mail from an address only later
  tied to his phone (identity.linked, PIN-verified): a repeat found through the identity graph.
- ``cat``: a call abandoned in the IVR at node main_menu after 40 s; a week before the period,
  another abandoned call (the previous period).
- ``dan``: a call queued 600 s (a long wait) and transferred twice (a transfer chain).
- ``eve``: a call queued 100 s, transferred once, unresolved; angry chat messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.journey.maps.reference import Ev

BASE = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday; the period is [2025-03-03, 2025-03-10)
S, M, H, D = 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000
PHONES = {
    "ann": "+14155550101",
    "bob": "+14155550102",
    "cat": "+14155550103",
    "dan": "+14155550104",
    "eve": "+14155550105",
}


def phone(who: str, verified_by: str = "caller_id") -> dict[str, str]:
    return {"type": "phone", "value": PHONES[who], "verified_by": verified_by}


def mail(who: str) -> dict[str, str]:
    return {"type": "email", "value": f"{who}@customer.test", "verified_by": "login"}


Item = tuple[Ev, list[dict[str, str]]]


def _call(
    who: str, iid: str, at: int, reason: str, tail: list[tuple[str, int, dict[str, Any]]]
) -> list[Item]:
    ids = [phone(who)]
    out: list[Item] = [
        (Ev(f"{iid}-0", "contact.started", at, {"interaction_id": iid, "channel": "phone",
            "touchpoint": "inbound_call", "contact_reason": reason}, who), ids)
    ]  # fmt: skip
    for n, (kind, dt, data) in enumerate(tail, start=1):
        out.append((Ev(f"{iid}-{n}", kind, at + dt, {"interaction_id": iid, **data}, who), ids))
    return out


def ended(resolved: bool | None, at: int = 10 * M) -> tuple[str, int, dict[str, Any]]:
    data: dict[str, Any] = {"channel": "phone"}
    if resolved is not None:
        data["resolved"] = resolved
    return ("contact.ended", at, data)


def items() -> list[Item]:
    out: list[Item] = []
    # ann: the billing example
    out += _call("ann", "ann-1", 9 * H, "billing", [
        ("agent.joined", 30 * S, {"agent_id": "a1", "team": "billing-tier1"}),
        ended(True),
    ])  # fmt: skip
    out += _call("ann", "ann-2", 30 * D + 9 * H, "billing", [ended(True)])
    # bob: phone, then e-mail two days later; the link comes later still
    out += _call("bob", "bob-1", 10 * H, "delivery", [ended(True)])
    out.append(
        (Ev("bob-mail", "message.received", 2 * D + 10 * H, {"interaction_id": "bob-m1",
            "channel": "email", "touchpoint": "support_inbox", "contact_reason": "delivery",
            "text": "Still no parcel"}, "bob"), [mail("bob")])
    )  # fmt: skip
    out.append(
        (Ev("bob-link", "identity.linked", 3 * D, {}, "bob"),
         [phone("bob", "ivr_pin"), mail("bob")])
    )  # fmt: skip
    # cat: abandoned in the IVR (and, in the previous week, in the queue)
    out += _call("cat", "cat-1", 11 * H, "outage", [
        ("ivr.step", 10 * S, {"channel": "ivr", "node": "main_menu"}),
        ("contact.abandoned", 50 * S, {"channel": "ivr", "where": "ivr", "node": "main_menu",
                                       "wait_s": 40.0}),
    ])  # fmt: skip
    out += _call("cat", "cat-0", -5 * D, "outage", [
        ("contact.queued", 10 * S, {"queue": "tech_queue"}),
        ("contact.abandoned", 130 * S, {"where": "queue", "queue": "tech_queue",
                                        "wait_s": 120.0}),
    ])  # fmt: skip
    # dan: a long wait and a chain of two transfers
    out += _call("dan", "dan-1", D + 12 * H, "plan", [
        ("contact.queued", 10 * S, {"queue": "sales_queue"}),
        ("agent.joined", 610 * S, {"agent_id": "a2", "team": "sales-tier1"}),
        ("contact.transferred", 700 * S, {"to_team": "sales-tier2"}),
        ("contact.transferred", 800 * S, {"to_team": "retention"}),
        ("agent.joined", 900 * S, {"agent_id": "a3", "team": "retention"}),
        ended(True, 20 * M),
    ])  # fmt: skip
    # eve: a short wait, one transfer, unresolved, negative sentiment
    out += _call("eve", "eve-1", 2 * D + 9 * H, "refund", [
        ("contact.queued", 10 * S, {"queue": "billing_queue"}),
        ("agent.joined", 110 * S, {"agent_id": "a4", "team": "billing-tier1"}),
        ("message.received", 120 * S, {"channel": "phone", "sentiment": -0.8}),
        ("contact.transferred", 200 * S, {"to_team": "billing-tier2"}),
        ended(False, 15 * M),
    ])  # fmt: skip
    # surveys inside the calls (no steps of their own): the health summary's experience slot
    for who, iid, at, csat, nps in (
        ("ann", "ann-1", 9 * H + 20 * M, 5, 9),
        ("eve", "eve-1", 2 * D + 9 * H + 20 * M, 2, 3),
        ("cat", "cat-0", -5 * D + 10 * M, 1, 0),  # the previous week
    ):
        for kind, score in (("csat", csat), ("nps", nps)):
            data = {"interaction_id": iid, "survey": kind, "score": score}
            out.append((Ev(f"{iid}-{kind}", "survey.responded", at, data, who), [phone(who)]))
    return out
