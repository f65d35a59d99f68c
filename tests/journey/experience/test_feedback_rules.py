"""Where feedback attaches, and comment masking (pure)."""

from __future__ import annotations

import pytest

from services.journey.experience.feedback import MASK, Feedback, mask_text, place
from services.journey.maps import rules as maps


def steps():
    return maps.build_steps(
        [
            maps.Fact("e1", "contact.started", 10, {"interaction_id": "chat",
                      "channel": "web_chat", "touchpoint": "chat"}),
            maps.Fact("e2", "contact.started", 20, {"interaction_id": "call",
                      "channel": "phone", "touchpoint": "agent_call"}),
            maps.Fact("e3", "feedback.submitted", 30, {"interaction_id": "fb-session",
                      "channel": "app", "comment": "x"}),
        ]
    )  # fmt: skip


def fb(t: int = 40, about: str | None = None, interaction: str | None = None) -> Feedback:
    return Feedback("f", t, "customer", 4.0, "ok", about, interaction)


@pytest.mark.parametrize(
    ("given", "node", "by"),
    [
        (fb(about="email:followup"), "email:followup", "about_node"),  # a node of the map
        (fb(about="chat"), "web_chat:chat", "about_step"),  # an interaction of the customer
        (fb(about="agent_call"), "phone:agent_call", "about_touchpoint"),
        (fb(about="billing", interaction="chat"), "web_chat:chat", "interaction"),
        (fb(about="billing", interaction="fb-session"), "phone:agent_call", "last_step"),
        (fb(t=15), "web_chat:chat", "last_step"),
        (fb(t=5), None, "unattached"),
        (fb(t=5, about="ivr_menu"), "ivr:ivr_menu", "about_touchpoint"),  # the only one known
    ],
)
def test_where_feedback_attaches(given, node, by):
    s = steps()
    known = {"email:followup", "ivr:ivr_menu", "phone:agent_call", "web_chat:chat"}
    placed = place(given, s, maps.ordered(s.values()), known)
    assert (placed.node, placed.by) == (node, by)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Call me on +1 (415) 555-0123 please", f"Call me on {MASK} please"),
        ("mail jane.doe+x@example.co.uk now", f"mail {MASK} now"),
        ("card 4111 1111 1111 1111", f"card {MASK}"),
        ("order 12345 was late", "order 12345 was late"),
        ("The menu is confusing", "The menu is confusing"),
    ],
)
def test_masking(text, expected):
    masked, changed = mask_text(text)
    assert masked == expected
    assert changed == (masked != text)
