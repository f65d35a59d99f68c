"""Feedback on the map's steps (pure): where a ``feedback.submitted`` attaches, comment masking,
and the per-node summary.

A feedback attaches to a node (touchpoint-level activity), the first that applies:

1. ``about`` names an activity of the tenant's map (``phone:inbound_call``) → that node;
2. ``about`` names one of the customer's interactions (a step) → that step's node;
3. ``about`` names a touchpoint (``inbound_call``) → the customer's last step there at or
   before the feedback, else the tenant's only activity with that touchpoint;
4. the feedback's own ``interaction_id`` is a step of the customer (not one made only of
   feedback or surveys) → that step's node;
5. otherwise the customer's last step at or before it; with none it stays unattached.

Comments are free text: on every read, e-mail addresses, phone numbers and other long digit
runs (cards, accounts) are replaced by ``••••``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.journey.experience.rules import attach, counts_as_step
from services.journey.maps import rules as maps

MASK = "••••"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# 7+ digits, optionally led by + and split by spaces, dots, dashes or parentheses.
_NUMBER = re.compile(r"\+?\d(?:[\s().-]{0,2}\d){6,}")
LATEST = 3


def mask_text(text: str) -> tuple[str, bool]:
    """``text`` with e-mails and long numbers masked, and whether anything was."""
    masked = _EMAIL.sub(MASK, text)
    masked = _NUMBER.sub(MASK, masked)
    return masked, masked != text


@dataclass(frozen=True, slots=True)
class Feedback:
    event_id: str
    time_us: int
    author: str
    rating: float | None
    comment: str
    about: str | None
    interaction: str | None


@dataclass(frozen=True, slots=True)
class Placed:
    node: str | None  # touchpoint-level activity
    step: str | None  # the step key, when tied to one
    by: str  # about_node, about_step, about_touchpoint, interaction, last_step, unattached


def place(
    fb: Feedback,
    steps: dict[str, maps.Step],
    views: Sequence[maps.StepView],
    known: Iterable[str],
) -> Placed:
    """Where one feedback attaches (the rules in the module docstring)."""
    about = fb.about
    known_set = set(known)
    if about:
        if about in known_set:
            return Placed(about, None, "about_node")
        key = f"i:{about}"
        if key in steps and counts_as_step(steps[key]):
            return Placed(maps.activity_of(steps[key]), key, "about_step")
        there = [
            v for v in views if v.time_us <= fb.time_us and v.activity.partition(":")[2] == about
        ]
        if there:
            return Placed(there[-1].activity, there[-1].key, "about_touchpoint")
        named = sorted(a for a in known_set if a.partition(":")[2] == about)
        if len(named) == 1:
            return Placed(named[0], None, "about_touchpoint")
    own = f"i:{fb.interaction}" if fb.interaction else ""
    if own in steps and counts_as_step(steps[own]):
        return Placed(maps.activity_of(steps[own]), own, "interaction")
    last = attach(fb.time_us, None, steps, views)
    if last is not None:
        return Placed(maps.activity_of(steps[last]), last, "last_step")
    return Placed(None, None, "unattached")


def public(fb: Feedback, placed: Placed, node: str | None, customer: str) -> dict[str, Any]:
    comment, was_masked = mask_text(fb.comment)
    return {
        "event_id": fb.event_id,
        "at": maps.from_us(fb.time_us).isoformat(),
        "author": fb.author,
        "rating": fb.rating,
        "comment": comment,
        "masked": was_masked,
        "about": fb.about,
        "node": node,
        "attached_by": placed.by,
        "customer_id": customer,
        "timeline": f"/v1/customers/{customer}/timeline",
    }


def summaries(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node: count, by author, mean rating, the latest comments (``items`` newest first)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        node = item["node"]
        if node is None:
            continue
        s = out.setdefault(
            node, {"count": 0, "customer": 0, "agent": 0, "rating_n": 0, "_sum": 0.0, "latest": []}
        )
        s["count"] += 1
        s[item["author"]] = s.get(item["author"], 0) + 1
        if item["rating"] is not None:
            s["rating_n"] += 1
            s["_sum"] += item["rating"]
        if len(s["latest"]) < LATEST:
            s["latest"].append(
                {k: item[k] for k in ("at", "author", "rating", "comment", "masked")}
            )
    for s in out.values():
        total = s.pop("_sum")
        s["mean_rating"] = round(total / s["rating_n"], 3) if s["rating_n"] else None
    return out


EMPTY: dict[str, Any] = {
    "count": 0,
    "customer": 0,
    "agent": 0,
    "rating_n": 0,
    "mean_rating": None,
    "latest": [],
}
